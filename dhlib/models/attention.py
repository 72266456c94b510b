"""Residual channel + spatial attention on the decoder feature (the package's own addition).

Both heads of DenseHybrid read the same 304-channel decoder feature ``f``. We refine it with
CBAM-style attention (Woo et al., ECCV 2018):

    channel:  M_c = σ( MLP(avgpool(f)) + MLP(maxpool(f)) )            C×1×1
    spatial:  M_s = σ( conv7×7([mean_c(M_c ⊙ f), max_c(M_c ⊙ f)]) )   1×H×W
    output:   f' = f + γ · (M_s ⊙ M_c ⊙ f),   γ a learnable scalar, γ = 0 at start

Why this design: channel attention can re-weight the feature groups that the OOD head and
the class head rely on, and spatial attention can emphasise object-sized regions where
anomalies live; together they cost a 304→19→304 MLP and one 7×7 conv, negligible next to
the decoder, and the spatial map is a picture one can look at. With γ = 0 the block is the
identity, so a loaded official checkpoint computes exactly its original outputs until
training moves γ.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class ResidualCBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)
        self.gamma = nn.Parameter(torch.zeros(()))

    def maps(self, f: torch.Tensor):
        """The channel map ``N×C×1×1`` and the spatial map ``N×1×H×W``, both in (0, 1)."""
        channel = torch.sigmoid(self.mlp(f.mean((2, 3), keepdim=True)) +
                                self.mlp(f.amax((2, 3), keepdim=True)))
        g = channel * f
        spatial = torch.sigmoid(self.spatial(torch.cat([g.mean(1, keepdim=True),
                                                        g.amax(1, keepdim=True)], 1)))
        return channel, spatial

    def forward(self, f: torch.Tensor, return_maps: bool = False):
        channel, spatial = self.maps(f)
        out = f + self.gamma * (spatial * channel * f)
        return (out, {"channel": channel, "spatial": spatial}) if return_maps else out

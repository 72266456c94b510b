"""A two-dimensional flow made of the same layers, for teaching and for testing.

Points (x₁, x₂) are stored as ``N×2×1×1`` images, so the image layers apply unchanged:
ActNorm and the 1×1 convolution mix the two coordinates, and each coupling transforms one
coordinate given the other. The prior is a standard normal in 2-D.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import FlowStep, gaussian_log_prob


class Flow2D(nn.Module):
    def __init__(self, steps: int = 8, hidden: int = 64, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.steps = nn.ModuleList([FlowStep(2, hidden, generator) for _ in range(steps)])

    def log_prob(self, points: torch.Tensor) -> torch.Tensor:
        """log p(x) for ``N×2`` points: log N(f(x); 0, I) + Σ log|det|."""
        z, total = points[:, :, None, None], points.new_zeros(points.shape[0])
        for step in self.steps:
            z, logdet = step(z)
            total = total + logdet
        return total + gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))

    def sample(self, n: int, generator=None) -> torch.Tensor:
        z = torch.randn(n, 2, 1, 1, generator=generator)
        for step in reversed(self.steps):
            z = step.inverse(z)
        return z[:, :, 0, 0]

"""The multi-scale flow over RGB patches, with dequantisation, bits/dim and sampling.

Architecture (Glow, Kingma & Dhariwal 2018; RealNVP's multi-scale split, Dinh et al. 2017)::

    for each of L levels:  squeeze (C,H,W → 4C,H/2,W/2) → K × [ActNorm, 1×1 conv, coupling]
                           → split half of the channels to a conditional Gaussian (not at the top)
    top: a Gaussian with learned per-channel mean and scale.

It is fully convolutional: trained on 32×32 or 64×64 crops, it samples any size whose sides
are multiples of 2^L.

Data are 8-bit images. With uniform dequantisation ``y = (x₂₅₅ + u)/256``, ``u ~ U[0,1)^D``,
the continuous density p(y) on [0,1]^D gives a lower bound on the discrete likelihood:
``log P(x₂₅₅) ≥ E_u[log p(y)] − D·log 256``. ``log_prob`` returns that bound (nats per
image) and ``bits_per_dim`` = −log_prob / (D·ln 2), the L_mle of the TPAMI paper; a uniform
model scores exactly 8 bits/dim.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .layers import FlowStep, Split, Squeeze, draw_noise, gaussian_log_prob


class MultiScaleFlow(nn.Module):
    def __init__(self, in_channels: int = 3, levels: int = 3, steps: int = 4, hidden: int = 64,
                 seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)  # the 1×1 convs start as fixed rotations
        self.squeeze = Squeeze()
        self.levels = nn.ModuleList()
        channels = in_channels
        for level in range(levels):
            channels *= 4
            block = nn.Module()
            block.steps = nn.ModuleList([FlowStep(channels, hidden, generator) for _ in range(steps)])
            block.split = Split(channels) if level < levels - 1 else None
            self.levels.append(block)
            if block.split is not None:
                channels = block.split.keep
        self.top_mean = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.top_log_std = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.factor = 2 ** levels  # sample sides must be multiples of this

    # --- the density ------------------------------------------------------------------------

    def log_density(self, v: torch.Tensor) -> torch.Tensor:
        """log p(v) per sample for continuous input v (N×3×H×W), in nats."""
        self._check_size(*v.shape[-2:])
        total = v.new_zeros(v.shape[0])
        x = v
        for block in self.levels:
            x, logdet = self._level_forward(block, x)
            total = total + logdet
            if block.split is not None:
                x, log_p, _ = block.split(x)
                total = total + log_p
        return total + gaussian_log_prob(x, self.top_mean, self.top_log_std)

    @staticmethod
    def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[0,1] images → 8-bit values → y = (x₂₅₅ + u)/256 with u ~ U[0,1), centred at 0."""
        x255 = torch.round(x.clamp(0, 1) * 255)
        u = draw_noise(torch.rand, x.shape, generator, x)
        return (x255 + u) / 256 - 0.5

    def log_prob(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Dequantisation bound on log P(8-bit image) per sample, nats: log p(y) − D·log 256."""
        dims = x[0].numel()
        return self.log_density(self.dequantize(x, generator)) - dims * math.log(256)

    def bits_per_dim(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """L_mle = −log P(x) / (D·ln 2), averaged over the batch (8.0 for a uniform model)."""
        return (-self.log_prob(x, generator) / (x[0].numel() * math.log(2))).mean()

    # --- sampling ---------------------------------------------------------------------------

    def sample(self, n: int, height: int, width: int, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` images ``n×3×height×width`` in [0, 1]; each latent ~ N(μ, (T·σ)²).

        Differentiable in the flow's parameters (reparameterised), so a loss on the samples
        can train the flow; wrap in ``torch.no_grad()`` when that is not wanted.
        """
        self._check_size(height, width)
        p = self.top_mean
        shape = (n, p.shape[1], height // self.factor, width // self.factor)
        eps = draw_noise(torch.randn, shape, generator, p)
        x = self.top_mean + temperature * torch.exp(self.top_log_std) * eps
        for block in reversed(self.levels):
            if block.split is not None:
                x = block.split.inverse(x, temperature=temperature, generator=generator)
            for step in reversed(block.steps):
                x = step.inverse(x)
            x = self.squeeze.inverse(x)
        # A coupling's inverse divides by its scale; a badly trained flow can overflow there.
        # Samples are images, so non-finite values are mapped into [0, 1] instead of spreading.
        return torch.nan_to_num(x + 0.5, nan=0.5, posinf=1.0, neginf=0.0).clamp(0, 1)

    # --- for tests and teaching -------------------------------------------------------------

    def standardized_latents(self, v: torch.Tensor):
        """The whole flow as a bijection v → ε with ε ~ N(0, I) under the model.

        Returns (ε flattened per sample, Σ log-dets of the standardisations). Then
        log p(v) = log N(ε; 0, I) + log|det ∂ε/∂v|, which a brute-force Jacobian can check.
        """
        parts, extra = [], v.new_zeros(v.shape[0])
        x = v
        for block in self.levels:
            x, _ = self._level_forward(block, x)
            if block.split is not None:
                keep, out = x[:, :block.split.keep], x[:, block.split.keep:]
                eps, ld = block.split.standardize(keep, out)
                parts.append(eps.flatten(1))
                extra = extra + ld
                x = keep
        parts.append(((x - self.top_mean) * torch.exp(-self.top_log_std)).flatten(1))
        return torch.cat(parts, 1), extra

    def inverse_of_forward(self, v: torch.Tensor) -> torch.Tensor:
        """Run v through every layer and back, keeping the factored-out latents (a test)."""
        outs = []
        x = v
        for block in self.levels:
            x, _ = self._level_forward(block, x)
            if block.split is not None:
                x, _, out = block.split(x)
                outs.append(out)
        for block in reversed(self.levels):
            if block.split is not None:
                x = block.split.inverse(x, outs.pop())
            for step in reversed(block.steps):
                x = step.inverse(x)
            x = self.squeeze.inverse(x)
        return x

    def _level_forward(self, block, x):
        """Squeeze, then the level's flow steps; returns (x, Σ log|det|)."""
        x, _ = self.squeeze(x)
        total = x.new_zeros(x.shape[0])
        for step in block.steps:
            x, logdet = step(x)
            total = total + logdet
        return x, total

    def _check_size(self, height: int, width: int):
        if height % self.factor or width % self.factor:
            raise ValueError(f"the flow needs sides that are multiples of {self.factor} "
                             f"(2^levels); got {height}×{width}")

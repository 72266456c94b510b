"""Invertible layers of a multi-scale normalizing flow (Glow/RealNVP style).

A normalizing flow maps data x to latents z by an invertible f. By the change of variables::

    log p(x) = log p(z) + log |det ∂f/∂x|,    z = f(x),

so each layer returns its output *and* the log-determinant of its Jacobian, per sample:
``forward(x) -> (y, logdet)`` with ``logdet`` of shape ``N``, and ``inverse(y) -> x``.
Images are ``N×C×H×W``; a log-determinant of a per-pixel map is summed over H×W.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def draw_noise(sampler, shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """``sampler(shape)`` (``torch.rand`` or ``torch.randn``) in ``like``'s dtype, on its device.

    The noise is drawn on the generator's own device and then moved: torch refuses a CPU
    generator for a CUDA tensor, and a CPU generator then gives the same noise on every device,
    so a seeded run samples on a GPU what it samples on a laptop.
    """
    device = like.device if generator is None else generator.device
    return sampler(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


class ActNorm(nn.Module):
    """Per-channel affine map ``y = (x + b) · exp(s)`` with data-dependent initialisation.

    On the first batch it sees, b and s are set so that y has zero mean and unit variance
    per channel (Kingma & Dhariwal, 2018). log|det| = H·W·Σ_c s_c.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))  # saved with the weights

    @torch.no_grad()
    def initialize(self, x):
        mean = x.mean((0, 2, 3), keepdim=True)
        std = x.std((0, 2, 3), keepdim=True, correction=0)
        self.bias.copy_(-mean)
        self.logs.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(True)

    def forward(self, x):
        if not self.initialized:
            self.initialize(x)
        y = (x + self.bias) * torch.exp(self.logs)
        return y, self.logs.sum() * x.shape[2] * x.shape[3] * x.new_ones(x.shape[0])

    def inverse(self, y):
        return y * torch.exp(-self.logs) - self.bias


class InvConv1x1(nn.Module):
    """Invertible 1×1 convolution with an LU-parameterised weight (Glow).

    W = P · L · (U + diag(sign · exp(log_s))), P a fixed permutation, L unit lower
    triangular, U strictly upper triangular: log|det W| = Σ log_s, so log|det| = H·W·Σ log_s
    costs O(C) instead of O(C³).
    """

    def __init__(self, channels: int, generator: torch.Generator | None = None):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator))  # a random rotation
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(diag))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(diag.abs()))

    def weight(self):
        eye = torch.eye(self.p.shape[0], device=self.p.device, dtype=self.lower.dtype)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def forward(self, x):
        w = self.weight()
        y = F.conv2d(x, w[:, :, None, None])
        return y, self.log_s.sum() * x.shape[2] * x.shape[3] * x.new_ones(x.shape[0])

    def inverse(self, y):
        w_inv = torch.linalg.inv(self.weight().double()).to(y.dtype)
        return F.conv2d(y, w_inv[:, :, None, None])


class ZeroConv2d(nn.Conv2d):
    """3×3 convolution initialised to zero, so a new coupling starts as the identity."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3, padding=1)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


class AffineCoupling(nn.Module):
    """Affine coupling: half of the channels transform the other half.

        x = [x_a, x_b],  (t, r) = NN(x_a),  s = sigmoid(r + 2)
        y = [x_a, (x_b + t) · s],   log|det| = Σ log s

    The scale is a sigmoid, bounded in (0, 1) and close to 1 at start (sigmoid(2) ≈ 0.88),
    which keeps training stable; the NN ends in a zero-initialised convolution.
    """

    def __init__(self, channels: int, hidden: int = 64):
        super().__init__()
        self.split = channels // 2
        self.net = nn.Sequential(
            nn.Conv2d(self.split, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            ZeroConv2d(hidden, 2 * (channels - self.split)))

    def _shift_log_scale(self, xa):
        shift, raw = self.net(xa).chunk(2, dim=1)
        return shift, F.logsigmoid(raw + 2.0)  # log s, exact even where s underflows

    def forward(self, x):
        xa, xb = x[:, :self.split], x[:, self.split:]
        shift, log_scale = self._shift_log_scale(xa)
        yb = (xb + shift) * torch.exp(log_scale)
        return torch.cat([xa, yb], 1), log_scale.flatten(1).sum(1)

    def inverse(self, y):
        ya, yb = y[:, :self.split], y[:, self.split:]
        shift, log_scale = self._shift_log_scale(ya)
        return torch.cat([ya, yb * torch.exp(-log_scale) - shift], 1)


class Squeeze(nn.Module):
    """Trade space for channels: ``C×H×W -> 4C×H/2×W/2`` (a permutation, log|det| = 0)."""

    def forward(self, x):
        n, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"squeeze needs even height and width, got {h}×{w}")
        y = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)
        return y, x.new_zeros(n)

    def inverse(self, y):
        n, c4, h, w = y.shape
        c = c4 // 4
        return y.view(n, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c, 2 * h, 2 * w)


class FlowStep(nn.Module):
    """One step of flow: ActNorm → invertible 1×1 conv → affine coupling."""

    def __init__(self, channels: int, hidden: int, generator=None):
        super().__init__()
        self.layers = nn.ModuleList([ActNorm(channels), InvConv1x1(channels, generator),
                                     AffineCoupling(channels, hidden)])

    def forward(self, x):
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y):
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


LOG_2PI = 1.8378770664093453  # log(2π)


def gaussian_log_prob(z, mean, log_std):
    """Σ over C, H, W of log N(z; mean, exp(log_std)²), per sample."""
    return (-0.5 * (LOG_2PI + 2 * log_std + ((z - mean) * torch.exp(-log_std)) ** 2)).flatten(1).sum(1)


class Split(nn.Module):
    """Factor out half of the channels to a Gaussian whose mean and scale depend on the rest.

        [z_keep, z_out] = x,   (μ, log σ) = ZeroConv(z_keep),   log p(z_out | z_keep) = log N(z_out; μ, σ²)

    ``forward(x) -> (z_keep, log_p, z_out)``; ``inverse(z_keep, z_out=None, temperature)``
    draws z_out = μ + T·σ·ε when it is not given (sampling). The standardised latent
    ε = (z_out − μ)/σ is what ``standardize`` returns (used to check the flow's Jacobian).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.keep = channels // 2
        self.prior = ZeroConv2d(self.keep, 2 * (channels - self.keep))

    def _params(self, z_keep):
        mean, log_std = self.prior(z_keep).chunk(2, dim=1)
        return mean, log_std

    def forward(self, x):
        z_keep, z_out = x[:, :self.keep], x[:, self.keep:]
        mean, log_std = self._params(z_keep)
        return z_keep, gaussian_log_prob(z_out, mean, log_std), z_out

    def inverse(self, z_keep, z_out=None, temperature: float = 1.0, generator=None):
        if z_out is None:
            mean, log_std = self._params(z_keep)
            eps = draw_noise(torch.randn, mean.shape, generator, mean)
            z_out = mean + temperature * torch.exp(log_std) * eps
        return torch.cat([z_keep, z_out], 1)

    def standardize(self, z_keep, z_out):
        mean, log_std = self._params(z_keep)
        return (z_out - mean) * torch.exp(-log_std), -log_std.flatten(1).sum(1)

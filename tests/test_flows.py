"""The flow's layers are invertible with exact log-determinants; the flow is a density."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from dhlib.flows.layers import draw_noise
from dhlib.flows import (ActNorm, AffineCoupling, Flow2D, FlowStep, InvConv1x1, MultiScaleFlow,
                         Split, Squeeze, build_flow)
from dhlib.losses import jsd_to_uniform
from dhlib.negatives import Box, paste
from dhlib.models import SmallDeepLabTH


def randomize(module, seed=0):
    """Give zero-initialised layers random weights so that every layer is non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def layers(channels=4):
    g = torch.Generator().manual_seed(0)
    actnorm = ActNorm(channels)
    actnorm(torch.randn(8, channels, 4, 4, generator=g) * 3 + 1)  # data-dependent init
    return {"actnorm": randomize(actnorm), "invconv": randomize(InvConv1x1(channels, g)),
            "coupling": randomize(AffineCoupling(channels, 16)), "squeeze": Squeeze(),
            "step": randomize(FlowStep(channels, 16, g))}


@pytest.mark.parametrize("name", ["actnorm", "invconv", "coupling", "squeeze", "step"])
def test_each_layer_inverts(name):
    layer = layers()[name]
    x = torch.randn(3, 4, 6, 8)
    y, logdet = layer(x)
    assert logdet.shape == (3,)
    assert (layer.inverse(y) - x).abs().max() < 1e-4


def test_split_inverts_with_its_latents():
    split = randomize(Split(8))
    x = torch.randn(2, 8, 4, 4)
    keep, log_p, out = split(x)
    assert keep.shape == (2, 4, 4, 4) and log_p.shape == (2,)
    assert torch.equal(split.inverse(keep, out), x)


def brute_force_logdet(fn, x):
    """log|det J| of fn at x (one sample), from the full autograd Jacobian."""
    flat = x.flatten()
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view_as(x)).flatten(), flat)
    return torch.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("name", ["actnorm", "invconv", "coupling", "squeeze", "step"])
def test_logdet_equals_brute_force_jacobian(name):
    layer = layers()[name].double()
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    _, logdet = layer(x)
    expected = brute_force_logdet(lambda v: layer(v)[0], x)
    assert logdet.item() == pytest.approx(expected.item(), abs=1e-9)


def test_whole_flow_is_a_normalised_density_by_change_of_variables():
    """log p(v) = log N(ε; 0, I) + log|det ∂ε/∂v| with ε the standardised latents."""
    flow = randomize(MultiScaleFlow(3, levels=2, steps=2, hidden=8)).double()
    flow.log_density(torch.rand(16, 3, 4, 4, dtype=torch.float64) - 0.5)  # ActNorm's data init
    v = torch.rand(1, 3, 4, 4, dtype=torch.float64) - 0.5
    randomize(flow, seed=1)
    eps, _ = flow.standardized_latents(v)
    log_normal = (-0.5 * (eps ** 2 + math.log(2 * math.pi))).sum()
    logdet = brute_force_logdet(lambda u: flow.standardized_latents(u)[0], v)
    assert flow.log_density(v).item() == pytest.approx((log_normal + logdet).item(), abs=1e-8)


def test_whole_flow_inverts():
    torch.manual_seed(0)
    flow = randomize(MultiScaleFlow(3, levels=3, steps=2, hidden=16))
    v = torch.rand(2, 3, 16, 24) - 0.5
    flow.log_density(v)
    assert (flow.inverse_of_forward(v) - v).abs().max() < 1e-4


def test_bits_per_dim_is_the_dequantised_likelihood():
    torch.manual_seed(0)
    flow = MultiScaleFlow(3, levels=2, steps=1, hidden=8)
    x = torch.rand(4, 3, 8, 8)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    log_p = flow.log_prob(x, g1)
    bpd = flow.bits_per_dim(x, g2)
    assert bpd.item() == pytest.approx((-log_p / (3 * 64 * math.log(2))).mean().item(), rel=1e-6)
    y = MultiScaleFlow.dequantize(x, torch.Generator().manual_seed(0)) + 0.5
    assert ((y * 256).floor() == (x * 255).round()).all() and (y >= 0).all() and (y < 1).all()


def test_sampling_sizes_temperature_and_gradients():
    torch.manual_seed(0)
    flow = build_flow(__import__("dhlib.config", fromlist=["x"]).load_profile("quick"))
    flow.log_density(torch.rand(4, 3, 32, 32) - 0.5)
    for h, w in ((16, 16), (24, 40), (216 // 8 * 8, 64)):
        s = flow.sample(2, h, w, temperature=0.8)
        assert s.shape == (2, 3, h, w) and 0 <= s.min() and s.max() <= 1
    with pytest.raises(ValueError, match="multiples of 8"):
        flow.sample(1, 20, 16)
    a = flow.sample(1, 16, 16, temperature=0.0, generator=torch.Generator().manual_seed(1))
    b = flow.sample(1, 16, 16, temperature=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(a, b)  # T = 0: every latent at its mean
    flow.sample(2, 16, 16).sum().backward()
    # the coupling nets end in zero-initialised convolutions: those receive the gradient first
    assert flow.levels[0].steps[0].layers[2].net[-1].weight.grad.abs().sum() > 0
    assert flow.top_mean.grad.abs().sum() > 0


def test_flow_learns_a_known_2d_density():
    """Trained on a mixture of Gaussians, the flow's held-out log-likelihood approaches the
    true density's (the best any model can do, in expectation)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5]])
    scales = torch.tensor([0.5, 0.4, 0.6])

    def draw(n):
        k = torch.randint(0, 3, (n,), generator=g)
        return means[k] + scales[k, None] * torch.randn(n, 2, generator=g)

    def true_log_density(x):
        comp = -0.5 * (((x[:, None] - means) / scales[:, None]) ** 2).sum(-1) \
            - 2 * torch.log(scales) - math.log(2 * math.pi)
        return torch.logsumexp(comp, 1) - math.log(3)

    flow = Flow2D(steps=8, hidden=64)
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for step in range(1500):
        loss = -flow.log_prob(draw(256)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    held_out = draw(20000)
    with torch.no_grad():
        ours, truth = flow.log_prob(held_out).mean().item(), true_log_density(held_out).mean().item()
    print(f"held-out log-likelihood: flow {ours:.4f}, true density {truth:.4f}")
    assert truth - 0.1 < ours <= truth + 0.02, (ours, truth)  # within 0.1 nats of the truth


# --- the JSD objective --------------------------------------------------------------------

def numpy_jsd(logits, mask):
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    u = np.full_like(p, 1 / p.shape[1])
    m = (p + u) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_pm = np.where(p > 0, p * np.log(p / m), 0).sum(1)
    kl_um = (u * np.log(u / m)).sum(1)
    return (0.5 * kl_pm + 0.5 * kl_um)[mask].mean()


@pytest.mark.parametrize("scale", [1.0, 10.0, 1e4])
def test_jsd_matches_numpy(scale):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 19, 5, 7)) * scale
    mask = rng.random((2, 5, 7)) < 0.4
    ours = jsd_to_uniform(torch.from_numpy(logits), torch.from_numpy(mask))
    assert torch.isfinite(ours)
    assert ours.item() == pytest.approx(numpy_jsd(logits, mask), rel=1e-5, abs=1e-6)


def test_jsd_bounds():
    flat = torch.zeros(1, 19, 2, 2)
    assert jsd_to_uniform(flat, torch.ones(1, 2, 2, dtype=torch.bool)).item() == pytest.approx(0, abs=1e-7)
    assert jsd_to_uniform(flat, torch.zeros(1, 2, 2, dtype=torch.bool)).item() == 0.0
    sharp = torch.zeros(1, 2, 1, 1)
    sharp[0, 0] = 1e4  # one-hot over two classes: JSD = H(3/4, 1/4) − ½ ln 2
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) - 0.5 * math.log(2)
    assert jsd_to_uniform(sharp, torch.ones(1, 1, 1, dtype=torch.bool)).item() == pytest.approx(expected, rel=1e-6)


def test_jsd_gradients_reach_the_flow_through_a_frozen_segmenter():
    torch.manual_seed(0)
    flow = MultiScaleFlow(3, levels=2, steps=1, hidden=8)
    flow.log_density(torch.rand(2, 3, 16, 16) - 0.5)
    segmenter = SmallDeepLabTH(19).eval().requires_grad_(False)
    scene, target = torch.rand(3, 64, 64), torch.zeros(64, 64, dtype=torch.long)
    sample = flow.sample(1, 16, 16)[0]
    mask = torch.ones(16, 16, dtype=torch.bool)
    mixed, _, ood = paste(scene, target, sample, mask, Box(20, 24, 16, 16))
    seg, _ = segmenter(mixed[None])
    jsd_to_uniform(seg, ood[None] == 1).backward()
    grads = [p.grad for p in flow.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in segmenter.parameters())


# --- pre-training ---------------------------------------------------------------------------

def test_pretraining_resumes_exactly(tiny_profile, tmp_path):
    from dhlib.flows.pretrain import pretrain_flow
    profile = dataclasses.replace(tiny_profile, flow_levels=2, flow_steps=1, flow_hidden=8, flow_crop=16,
                                  flow_batch=4, flow_checkpoint_every=3, flow_val_crops=8)
    straight = dataclasses.replace(profile, runs_dir=str(tmp_path / "straight"))
    interrupted = dataclasses.replace(profile, runs_dir=str(tmp_path / "interrupted"))
    summary = pretrain_flow(straight, steps=6, progress=False)
    pretrain_flow(interrupted, steps=3, progress=False)        # stops after its checkpoint at 3
    resumed = pretrain_flow(interrupted, resume=True, steps=6, progress=False)
    a = torch.load(tmp_path / "straight/flow.pt", weights_only=True)
    b = torch.load(tmp_path / "interrupted/flow.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["val_bits_per_dim"] == summary["val_bits_per_dim"]
    lines = (tmp_path / "interrupted/flow_log.jsonl").read_text().splitlines()
    assert summary["steps"] == 6 and len(lines) == 2  # steps 3 and 6 were logged once each


def test_noise_is_drawn_on_the_generators_device_then_moved():
    """CUDA refuses a CPU generator; drawing where the generator lives and moving the result
    keeps a seeded run's noise the same on every device."""
    calls = []

    def sampler(shape, generator, device, dtype):
        calls.append(torch.device(device))
        return torch.zeros(shape, device=device, dtype=dtype)

    elsewhere = torch.empty(2, device="meta", dtype=torch.float16)   # stands in for a GPU tensor
    out = draw_noise(sampler, (2, 3), torch.Generator().manual_seed(0), elsewhere)
    assert calls == [torch.device("cpu")]
    assert out.device.type == "meta" and out.dtype == torch.float16 and out.shape == (2, 3)
    draw_noise(sampler, (1,), None, elsewhere)          # no generator: drawn where the tensor is
    assert calls[-1].type == "meta"
    # The values are the generator's own stream.
    got = draw_noise(torch.randn, (5,), torch.Generator().manual_seed(3), torch.empty(0, dtype=torch.float64))
    assert torch.equal(got, torch.randn(5, generator=torch.Generator().manual_seed(3), dtype=torch.float64))

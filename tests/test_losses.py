import math

import numpy as np
import pytest
import torch

from dhlib.losses import densehybrid_loss, likelihood_loss, ood_head_loss, segmentation_loss
from dhlib import losses


def _batch():
    g = torch.Generator().manual_seed(0)
    seg = torch.randn(2, 5, 4, 6, generator=g, dtype=torch.float64)
    ood = torch.randn(2, 2, 4, 6, generator=g, dtype=torch.float64)
    seg_t = torch.randint(0, 5, (2, 4, 6), generator=g)
    ood_t = torch.zeros(2, 4, 6, dtype=torch.long)
    ood_t[:, :2, :2] = 1           # pasted negatives
    seg_t[ood_t == 1] = 255
    seg_t[:, -1, -1] = 255          # void
    ood_t[:, -1, -1] = 255
    return seg, ood, seg_t, ood_t


def test_terms_against_direct_formulas():
    seg, ood, seg_t, ood_t = _batch()
    s, o = seg.numpy(), ood.numpy()
    lse = np.log(np.exp(s).sum(1))
    inlier = seg_t.numpy() != 255
    picked = np.take_along_axis(s, np.where(inlier, seg_t.numpy(), 0)[:, None], 1)[:, 0]
    l_d = (lse - picked)[inlier].mean()
    neg = ood_t.numpy() == 1
    l_x = lse[neg].mean()
    scored = ood_t.numpy() != 255
    lse_o = np.log(np.exp(o).sum(1))
    picked_o = np.take_along_axis(o, np.where(scored, ood_t.numpy(), 0)[:, None], 1)[:, 0]
    l_cla = (lse_o - picked_o)[scored].mean()
    assert segmentation_loss(seg, seg_t).item() == pytest.approx(l_d, rel=1e-12)
    assert likelihood_loss(seg, ood_t).item() == pytest.approx(l_x, rel=1e-12)
    assert ood_head_loss(ood, ood_t).item() == pytest.approx(l_cla, rel=1e-12)
    terms = densehybrid_loss(seg, ood, seg_t, ood_t, beta=0.03)
    assert terms["loss"].item() == pytest.approx(l_d + 0.03 * l_x + 0.3 * l_cla, rel=1e-12)


def test_likelihood_term_lowers_logsumexp_only_on_negatives():
    seg, _, _, ood_t = _batch()
    seg.requires_grad_(True)
    likelihood_loss(seg, ood_t).backward()
    grad = seg.grad
    assert (grad[:, :, ood_t[0] != 1] == 0).all()                  # no gradient off the negatives
    # d lse / d s = softmax > 0: descending the loss lowers every logit of a negative pixel
    assert (grad.permute(0, 2, 3, 1)[ood_t == 1] > 0).all()
    assert likelihood_loss(seg.detach(), torch.zeros_like(ood_t)).item() == 0.0


def test_likelihood_floor_is_a_softplus_hinge_bounded_below():
    seg, ood, seg_t, ood_t = _batch()
    lse = torch.logsumexp(seg, 1)[ood_t == 1].numpy()
    m = -0.5
    expected = np.log1p(np.exp(lse - m)).mean()
    assert likelihood_loss(seg, ood_t, floor=m).item() == pytest.approx(expected, rel=1e-12)
    terms = densehybrid_loss(seg, ood, seg_t, ood_t, beta=0.03, likelihood_floor=m)
    assert terms["L_x"].item() == pytest.approx(expected, rel=1e-12)
    # far below the floor the term is ~0 and stops pushing; far above it, it is the plain term
    low = (seg - 100).requires_grad_(True)
    value = likelihood_loss(low, ood_t, floor=m)
    value.backward()
    assert 0 <= value.item() < 1e-30 and low.grad.abs().max().item() < 1e-30
    high = seg + 100
    assert likelihood_loss(high, ood_t, floor=m).item() == pytest.approx(
        likelihood_loss(high, ood_t).item() - m, rel=1e-9)
    assert likelihood_loss(seg, torch.zeros_like(ood_t), floor=m).item() == 0.0


def test_smoke_losses_stay_finite_on_extreme_logits():
    seg, ood, seg_t, ood_t = _batch()
    terms = densehybrid_loss(seg.float() * 1e4, ood.float() * 1e4, seg_t, ood_t, beta=0.03)
    assert all(math.isfinite(v.item()) for v in terms.values())


def test_class_balance_weights_are_median_frequency_ratios():
    counts = [600, 300, 100, 0, 1]
    freq = np.array([600, 300, 100, 1]) / 1001
    median = np.median(freq)                        # torch's median of 4 values is the lower one
    lower_median = np.sort(freq)[1]
    w = losses.class_balance_weights(counts, 0.5).double().numpy()
    np.testing.assert_allclose(w[[0, 1, 2, 4]], (lower_median / freq) ** 0.5, rtol=1e-6)
    assert w[3] == 0                                # absent class
    assert median != lower_median                   # (the convention matters here)
    assert torch.equal(losses.class_balance_weights(counts, 0.0), torch.tensor([1.0, 1, 1, 0, 1]))
    with pytest.raises(ValueError, match="no class"):
        losses.class_balance_weights([0, 0], 1.0)


def test_weighted_segmentation_loss_is_the_weighted_mean():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0] = 255
    w = torch.tensor([0.5, 2.0, 1.0])
    nll = -torch.log_softmax(logits, 1).gather(1, target.clamp(max=2)[:, None])[:, 0]
    valid = target != 255
    weights = w[target.clamp(max=2)] * valid
    expected = (weights * nll).sum() / weights.sum()
    torch.testing.assert_close(losses.segmentation_loss(logits, target, w), expected)


def test_focal_ood_head_loss_by_hand():
    """Three pixels and a void one. Logits (0, 0): P = 1/2 for either target, where the focal
    term 2^γ (1 − P)^γ (−ln P) equals the cross-entropy ln 2 for every γ. (ln 3, 0) with target
    0: P = 3/4, cross-entropy ln 4/3, focal factor (2 · 1/4)^γ. (0, ln 9) with target 1: P = 9/10."""
    ood_logits = torch.tensor([[0.0, math.log(3), 0.0, 5.0], [0.0, 0.0, math.log(9), -5.0]]).reshape(1, 2, 1, 4)
    ood_target = torch.tensor([[[1, 0, 1, 255]]])
    ln2, ln43, ln109 = math.log(2), math.log(4 / 3), math.log(10 / 9)
    assert ood_head_loss(ood_logits, ood_target, focal_gamma=0.0).item() == \
        pytest.approx((ln2 + ln43 + ln109) / 3, rel=1e-6)
    for gamma in (1.0, 2.0, 4.0):
        expected = (ln2 + 0.5 ** gamma * ln43 + 0.2 ** gamma * ln109) / 3
        assert ood_head_loss(ood_logits, ood_target, focal_gamma=gamma).item() == pytest.approx(expected, rel=1e-6)
    # with class weights (pixel 1 is an inlier of class 1, weight 2) the two combine
    seg_target = torch.tensor([[[255, 1, 255, 255]]])
    weights = torch.tensor([0.5, 2.0])
    got = ood_head_loss(ood_logits, ood_target, seg_target, weights, focal_gamma=2.0).item()
    assert got == pytest.approx((ln2 + 2 * 0.25 * ln43 + 0.04 * ln109) / 4, rel=1e-6)
    # densehybrid_loss passes γ on to L_cla
    terms = densehybrid_loss(torch.zeros(1, 3, 1, 4), ood_logits, seg_target, ood_target, 0.1, ood_focal_gamma=2.0)
    assert terms["L_cla"].item() == pytest.approx((ln2 + 0.25 * ln43 + 0.04 * ln109) / 3, rel=1e-6)


def test_class_balanced_ood_head_loss_by_hand():
    """Four pixels: an inlier of class 0 (w 0.5), an inlier of class 1 (w 2), a negative and a
    void pixel. Logits (0, 0) cost ln 2 for either target; (ln 3, 0) with target 0 costs ln 4/3."""
    ood_logits = torch.tensor([[0.0, math.log(3), 0.0, 5.0], [0.0, 0.0, 0.0, -5.0]]).reshape(1, 2, 1, 4)
    ood_target = torch.tensor([[[0, 0, 1, 255]]])
    seg_target = torch.tensor([[[0, 1, 255, 255]]])
    weights = torch.tensor([0.5, 2.0, 1.0])
    ln2, ln43 = math.log(2), math.log(4 / 3)
    plain = ood_head_loss(ood_logits, ood_target)
    assert plain.item() == pytest.approx((ln2 + ln43 + ln2) / 3, rel=1e-6)
    balanced = ood_head_loss(ood_logits, ood_target, seg_target, weights)
    assert balanced.item() == pytest.approx((0.5 * ln2 + 2 * ln43 + 1 * ln2) / 3.5, rel=1e-6)
    # A void pixel kept as an inlier (the released code's L_cla) has no class: it counts 1.
    void_in = ood_target.clone()
    void_in[..., 3] = 0
    ce_void = math.log1p(math.exp(-10.0))    # logits (5, −5), target 0
    got = ood_head_loss(ood_logits, void_in, seg_target, weights).item()
    assert got == pytest.approx((0.5 * ln2 + 2 * ln43 + ln2 + ce_void) / 4.5, rel=1e-6)
    # densehybrid_loss passes the weights to L_cla only when asked.
    seg_logits = torch.zeros(1, 3, 1, 4)
    terms = densehybrid_loss(seg_logits, ood_logits, seg_target, ood_target, 0.1, weights, None, weights)
    assert terms["L_cla"].item() == pytest.approx(balanced.item())
    assert densehybrid_loss(seg_logits, ood_logits, seg_target, ood_target, 0.1, weights)["L_cla"].item() == \
        pytest.approx(plain.item())

"""Anomaly scores against numpy; exact OOD metrics against scikit-learn; streaming metrics."""
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from dhlib.metrics import StreamingOODMetrics, ood_metrics
from dhlib.scores import SCORES


def numpy_scores(seg, ood):
    p = softmax(seg, axis=1)
    lse = logsumexp(seg, axis=1)
    log_out = ood[:, 1] - logsumexp(ood, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
    return {"msp": 1 - p.max(1), "max_logit": -seg.max(1), "entropy": -plogp.sum(1),
            "energy": -lse, "discriminative": log_out, "hybrid": log_out - lse}


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_scores_match_numpy_and_stay_finite(scale):
    rng = np.random.default_rng(0)
    seg = rng.standard_normal((2, 19, 4, 5)) * scale
    ood = rng.standard_normal((2, 2, 4, 5)) * scale
    expected = numpy_scores(seg, ood)
    assert set(SCORES) == {"msp", "max_logit", "entropy", "energy", "discriminative", "hybrid"}
    for name, fn in SCORES.items():
        ours = fn(torch.from_numpy(seg), torch.from_numpy(ood))
        assert ours.shape == (2, 4, 5) and torch.isfinite(ours).all(), name
        np.testing.assert_allclose(ours.numpy(), expected[name], rtol=1e-9, atol=1e-9 * scale, err_msg=name)
        half = fn(torch.from_numpy(seg).half(), torch.from_numpy(ood).half())
        assert half.dtype == torch.float32 and torch.isfinite(half).all(), name


def test_hybrid_score_on_hand_computed_pixels():
    """ln P(out|x) − ln Σ_k exp s_k(x), worked out with math.log/math.exp on two pixels.

    Pixel 1: s = (1, 2, 0.5), OOD logits (0.3, −0.7):
        ln P(out|x) = −0.7 − ln(e^0.3 + e^−0.7) = −1.31326…
        ln p̂(x)    = ln(e^1 + e^2 + e^0.5)     =  2.46437…
        hybrid      = −1.31326… − 2.46437…      = −3.77763…
    Pixel 2: s = (0, 0, 0), OOD logits (0, 0): ln ½ − ln 3 = −ln 6, exactly.
    """
    seg = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.5, 0.0]], dtype=torch.float64)[None, :, None, :]  # 1×3×1×2
    ood = torch.tensor([[0.3, 0.0], [-0.7, 0.0]], dtype=torch.float64)[None, :, None, :]             # 1×2×1×2
    log_out = -0.7 - math.log(math.exp(0.3) + math.exp(-0.7))
    log_density = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5))
    expected = [log_out - log_density, -math.log(6.0)]
    assert expected[0] == pytest.approx(-3.7776304716, abs=1e-9)  # the figures in the docstring
    ours = SCORES["hybrid"](seg, ood)
    assert ours.shape == (1, 1, 2)
    assert ours[0, 0].tolist() == pytest.approx(expected, rel=1e-12)
    # the same numbers in float32 (the dtype the evaluation runs in)
    assert SCORES["hybrid"](seg.float(), ood.float())[0, 0].tolist() == pytest.approx(expected, rel=1e-6)
    # higher = more anomalous: raising P(out|x) or lowering every class logit raises the score
    assert (SCORES["hybrid"](seg, ood + torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)) > ours).all()
    assert (SCORES["hybrid"](seg - 1, ood) > ours).all()


def sklearn_metrics(scores, labels):
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    keep = labels != 255
    s, y = scores[keep], labels[keep]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return {"AP": average_precision_score(y, s), "AUROC": roc_auc_score(y, s),
            "FPR95": fpr[np.argmax(tpr >= 0.95)]}


def adversarial_cases():
    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.1).astype(np.uint8)
    yield "heavy ties", np.round(rng.standard_normal(4000) + y, 1), y
    yield "constant scores", np.full(4000, 3.0), y
    yield "two values", (rng.random(4000) < 0.5).astype(float), y
    rare = np.zeros(1_000_000, np.uint8)
    rare[rng.choice(rare.size, 1, replace=False)] = 1                    # a 1e-6 positive rate
    yield "1e-6 positives", rng.standard_normal(rare.size), rare
    yield "huge and negative scores", (rng.standard_normal(4000) + 2 * y) * 1e30 - 1e31, y
    yield "float16 scores", (rng.standard_normal(4000) + y).astype(np.float16), y
    yy = y.copy()
    yy[:500] = 255                                                        # ignored pixels
    yield "ignore pixels", rng.standard_normal(4000) + yy * 0.0 + (yy == 1), yy
    yield "perfect separation", np.where(y == 1, 5.0, -5.0), y
    yield "inverted", np.where(y == 1, -5.0, 5.0) + rng.standard_normal(4000) * 0.01, y


@pytest.mark.parametrize("case", list(adversarial_cases()), ids=lambda c: c[0])
def test_exact_metrics_equal_sklearn(case):
    _, scores, labels = case
    ours = ood_metrics(scores, labels)
    ref = sklearn_metrics(np.asarray(scores, dtype=np.float32 if scores.dtype == np.float16 else scores.dtype),
                          labels)
    for key in ("AP", "AUROC", "FPR95"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key


def _fpr_at_first_tpr_at_least_95(scores, labels):
    """Brute force: sweep every distinct score t from high to low, call "score ≥ t" anomalous,
    return the FPR at the first t with TPR ≥ 0.95."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    for t in np.unique(scores)[::-1]:
        if np.mean(pos >= t) >= 0.95:
            return np.mean(neg >= t)


def test_fpr95_takes_the_first_threshold_with_tpr_at_least_95_percent():
    # 20 anomalies, so TPR = 19/20 = 0.95 is reached exactly: "≥ 0.95" and DenseHybrid's
    # "> 0.95" (calculate_auroc in experiments/semseg_negatives_joint_th.py) differ.
    #   anomalies: 20, 19, ..., 2 (19 of them) and 0.5
    #   inliers:   10.5, 2.0 (tied with the 19th anomaly), 1.5, 1.0, 0.25, 0, -1, -2, -3, -4
    #   t = 2:   TPR 19/20 = 0.95 ≥ 0.95, inliers ≥ 2: 10.5 and 2.0   -> FPR95 = 2/10
    #   t = 0.5: TPR 20/20 = 1 > 0.95,     inliers ≥ 0.5: four         -> strict rule: 4/10
    pos = np.concatenate([np.arange(20.0, 1.0, -1.0), [0.5]])
    neg = np.array([10.5, 2.0, 1.5, 1.0, 0.25, 0.0, -1.0, -2.0, -3.0, -4.0])
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(20, np.uint8), np.zeros(10, np.uint8)])
    assert _fpr_at_first_tpr_at_least_95(scores, labels) == pytest.approx(0.2)
    assert ood_metrics(scores, labels)["FPR95"] == pytest.approx(0.2)
    stream = StreamingOODMetrics()
    stream.update(scores, labels)
    assert stream.compute()["FPR95"] == pytest.approx(0.2)
    fpr, tpr, _ = roc_curve(labels, scores)              # DenseHybrid: first TPR > 0.95
    assert fpr[np.argmax(tpr > 0.95)] == pytest.approx(0.4)


def test_exact_metrics_accept_torch_and_any_shape():
    torch.manual_seed(0)
    labels = (torch.rand(2, 30, 40) < 0.05).long()
    scores = torch.randn(2, 30, 40) + labels
    ref = sklearn_metrics(scores.numpy(), labels.numpy())
    ours = ood_metrics(scores, labels)
    assert all(ours[k] == pytest.approx(ref[k], abs=1e-9) for k in ref)


@pytest.mark.parametrize("scores, labels, message", [
    (np.zeros(5), np.zeros(5), "need both anomaly and inlier pixels"),
    (np.zeros(5), np.ones(5), "need both"),
    (np.array([0.0, np.nan, 1.0]), np.array([0, 1, 0]), "NaN or ±inf"),
    (np.array([0.0, np.inf, 1.0]), np.array([0, 1, 0]), "NaN or ±inf"),
    (np.zeros(4), np.zeros(5), "same shape"),
    (np.zeros(3), np.array([0, 1, 2]), r"found \[2\]"),
    (np.zeros(3), np.array([255, 255, 1]), "need both"),
])
def test_exact_metrics_reject_bad_input(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        ood_metrics(scores, labels)


def test_streaming_agrees_with_exact_on_unbounded_scores():
    rng = np.random.default_rng(1)
    stream, all_s, all_y = StreamingOODMetrics(), [], []
    for _ in range(10):
        y = (rng.random(200_000) < 0.02).astype(np.uint8)
        s = (rng.standard_normal(y.size) * 50 + 80 * y - 1000).astype(np.float32)  # far from [0, 1]
        y[:1000] = 255
        stream.update(s, y)
        all_s.append(s)
        all_y.append(y)
    exact = ood_metrics(np.concatenate(all_s), np.concatenate(all_y))
    approx = stream.compute()
    for key in exact:
        assert approx[key] == pytest.approx(exact[key], abs=1e-4), key


def test_streaming_states_merge():
    rng = np.random.default_rng(2)
    y = (rng.random(100_000) < 0.1).astype(np.uint8)
    s = rng.standard_normal(y.size) + y
    whole = StreamingOODMetrics(center=0.0, scale=1.0)
    whole.update(s, y)
    a, b = StreamingOODMetrics(center=0.0, scale=1.0), StreamingOODMetrics(center=0.0, scale=1.0)
    a.update(s[:30_000], y[:30_000])
    b.update(s[30_000:], y[30_000:])
    assert a.merge(b).compute() == whole.compute()
    with pytest.raises(ValueError, match="same bits, center and scale"):
        StreamingOODMetrics(center=1.0, scale=1.0).merge(whole)
    summed = StreamingOODMetrics()
    summed.pos = (a.state_dict()["pos"]).numpy().copy()
    summed.neg = (a.state_dict()["neg"]).numpy().copy()
    assert summed.compute() == whole.compute()
    with pytest.raises(ValueError, match="need both"):
        StreamingOODMetrics().compute()
    with pytest.raises(ValueError, match="NaN"):
        StreamingOODMetrics().update(np.array([np.nan]), np.array([1]))


def test_streaming_bins_order_like_floats():
    m = StreamingOODMetrics(bits=16, center=0.0, scale=1.0)
    values = np.array([-np.finfo(np.float32).max, -1e10, -1.0, -1e-30, -0.0, 0.0, 1e-30, 1.0, 1e10,
                       np.finfo(np.float32).max], np.float32)
    bins = m._bins(values)
    assert (np.diff(bins) >= 0).all() and bins[0] < bins[4] < bins[-1]

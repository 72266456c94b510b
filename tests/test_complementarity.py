"""The cue-complementarity test (dhlib.complementarity): the weight sweep against scikit-learn and
brute force, the rank statistics against scipy and a hand count, and the two hand-built worlds
it is meant to tell apart."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

from dhlib.complementarity import cue_complementarity, cue_maps


def _images(disc, ener, labels, parts=3):
    """Split flat arrays into ``parts`` 'images' of (disc, energy, label) tensors."""
    return [(torch.from_numpy(d), torch.from_numpy(e), torch.from_numpy(y))
            for d, e, y in zip(np.array_split(disc, parts), np.array_split(ener, parts), np.array_split(labels, parts))]


def _fpr95_brute(s, y):
    """FPR at the first threshold, from the highest score down, with TPR >= 0.95."""
    for t in np.unique(s)[::-1]:
        if (s[y == 1] >= t).mean() >= 0.95:
            return (s[y == 0] >= t).mean()


def test_the_sweep_pools_every_pixel_as_sklearn_does():
    rng = np.random.default_rng(0)
    y = (rng.random(6000) < 0.1).astype(np.int64)
    disc = (rng.normal(0, 1, y.size) + 1.5 * y).astype(np.float32)
    ener = (rng.normal(0, 2, y.size) + 2.0 * y).astype(np.float32)
    y_void = y.copy()
    y_void[:50] = 255                                      # void pixels are not scored
    r = cue_complementarity(_images(disc, ener, y_void), weights=(0.0, 1.0, 3.0, math.inf))
    keep = y_void != 255
    for i, w in enumerate(r["weights"]):
        s = (ener if math.isinf(w) else disc + w * ener)[keep].astype(np.float64)
        assert r["AP"][i] == pytest.approx(average_precision_score(y[keep], s), abs=2e-3)
        assert r["AUROC"][i] == pytest.approx(roc_auc_score(y[keep], s), abs=2e-3)
        assert r["FPR95"][i] == pytest.approx(_fpr95_brute(s, y[keep]), abs=2e-3)


def test_rank_statistics_on_every_pixel_match_scipy_and_a_hand_count():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(1000), np.zeros(3000)].astype(np.int64)
    disc = rng.normal(0, 1, y.size).astype(np.float32)
    ener = (0.6 * disc + rng.normal(0, 1, y.size)).astype(np.float32)
    r = cue_complementarity(_images(disc, ener, y, parts=2), inliers_per_image=10**6)
    a, n = y == 1, y == 0
    assert r["spearman_anomaly"] == pytest.approx(spearmanr(disc[a], ener[a])[0], abs=1e-9)
    assert r["spearman_inlier"] == pytest.approx(spearmanr(disc[n], ener[n])[0], abs=1e-9)
    # by ranks (1000 anomalies): energy misses its 50 lowest at 95 % TPR; how many of those are
    # among the discriminative cue's 200 lowest, which it misses at 80 % TPR?
    e_rank, d_rank = np.argsort(np.argsort(ener[a])), np.argsort(np.argsort(disc[a]))
    hard = e_rank < 50
    assert r["shared_misses"] == pytest.approx((d_rank[hard] < 200).mean(), abs=1e-12)


def test_shared_misses_pool_every_anomaly_pixel_whatever_the_image_sizes():
    """One big anomaly and many small ones: the statistic is that of the pooled pixels, so the
    small images do not count for more than their pixels."""
    rng = np.random.default_rng(3)
    images, all_d, all_e = [], [], []
    for n_out in (5000, 30, 30, 30, 30, 30):
        y = np.r_[np.ones(n_out), np.zeros(3000)].astype(np.int64)
        d = rng.normal(0, 1, y.size).astype(np.float32)
        e = (d + rng.normal(0, 1, y.size) + (n_out < 100) * 3 * y).astype(np.float32)
        images.append((torch.from_numpy(d), torch.from_numpy(e), torch.from_numpy(y)))
        all_d.append(d[:n_out])
        all_e.append(e[:n_out])
    r = cue_complementarity(images)                          # default settings: inliers sampled
    d, e = np.concatenate(all_d), np.concatenate(all_e)
    e_rank, d_rank = np.argsort(np.argsort(e)), np.argsort(np.argsort(d))
    # 5150 anomaly pixels: at 95 % TPR energy keeps ⌈4892.5⌉ = 4893 and misses its 257 lowest;
    # at 80 % TPR the discriminative cue keeps 4120 and misses its 1030 lowest
    hard = e_rank < 257
    assert r["shared_misses"] == pytest.approx((d_rank[hard] < 1030).mean(), abs=1e-12)
    assert r["spearman_anomaly"] == pytest.approx(spearmanr(d, e)[0], abs=1e-9)


def test_complementary_cues_are_told_from_cues_blind_to_the_same_anomalies():
    rng = np.random.default_rng(2)
    n_in, n_out = 20000, 2000
    y = np.r_[np.zeros(n_in), np.ones(n_out)].astype(np.int64)
    # complementary, as in the toy of notebook 00: half the anomalies only each cue sees
    seen_by_disc = np.r_[np.zeros(n_in, bool), np.arange(n_out) < n_out // 2]
    disc = rng.normal(0, 1, y.size) + 5 * seen_by_disc
    ener = rng.normal(0, 1, y.size) + 5 * ((y == 1) & ~seen_by_disc)
    comp = cue_complementarity(_images(disc.astype(np.float32), ener.astype(np.float32), y))
    fpr = dict(zip(comp["weights"], comp["FPR95"]))
    assert fpr[1.0] < 0.5 * min(fpr[0.0], fpr[math.inf])      # the hybrid beats both halves
    assert comp["shared_misses"] < 0.05
    # blind to the same anomalies: the discriminative cue is energy plus noise
    ener2 = rng.normal(0, 1, y.size) + 2.5 * y
    disc2 = ener2 + rng.normal(0, 1, y.size)
    same = cue_complementarity(_images(disc2.astype(np.float32), ener2.astype(np.float32), y))
    fpr2 = dict(zip(same["weights"], same["FPR95"]))
    assert fpr2[math.inf] == min(fpr2.values())              # energy alone is best at 95 % TPR
    assert same["shared_misses"] > 0.5 and same["spearman_anomaly"] > 0.6


def test_cue_maps_are_the_two_cues_of_the_model():
    class Fixed(torch.nn.Module):
        """A 'model' whose logits are a fixed function of the image."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(1.0))

        def forward(self, x):
            seg = torch.cat([x, -x[:, :1]], 1) * 3            # 4 classes
            ood = torch.cat([x[:, :1], x[:, 1:2] * 2], 1)
            return seg, ood

    images = [torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    labels = [torch.randint(0, 2, (5, 7), generator=torch.Generator().manual_seed(9 + i)) for i in range(2)]
    out = list(cue_maps(Fixed(), list(zip(images, labels)), progress=False))
    for (disc, ener, label), image, lab in zip(out, images, labels):
        seg = torch.cat([image, -image[:1]]) * 3
        a, b = image[0], 2 * image[1]
        # ln P(out|x) = b − ln(e^a + e^b);  −ln p̂ = −ln Σ_k e^{s_k}
        assert torch.allclose(disc, b - torch.log(torch.exp(a) + torch.exp(b)), atol=1e-6)
        assert torch.allclose(ener, -torch.log(torch.exp(seg).sum(0)), atol=1e-5)
        assert torch.equal(label, lab)


def test_a_dataset_without_anomalies_is_a_clear_error():
    z = np.zeros(100, np.float32)
    with pytest.raises(ValueError, match="anomaly and inlier"):
        cue_complementarity(_images(z, z, np.zeros(100, np.int64)))

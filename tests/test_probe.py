"""The oracle linear probe (dhlib.probe): sampling against the full upsampled map, the logistic
regression against scikit-learn, and hand-built feature worlds where the answer is known."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from dhlib.models.deeplabv3plus import upsample
from dhlib.probe import SCORES, _sample_fold, _score_fold, decision_map, features_at, fit_logistic, linear_probe


def test_features_at_sampled_pixels_equal_the_full_upsampled_map():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(1, 5, 7, 9, generator=g)
    size = (20, 33)
    rows = torch.cat([torch.tensor([0, 19, 0, 19]), torch.randint(0, 20, (200,), generator=g)])
    cols = torch.cat([torch.tensor([0, 0, 32, 32]), torch.randint(0, 33, (200,), generator=g)])
    full = F.interpolate(f, size=size, mode="bilinear", align_corners=True)
    assert torch.allclose(features_at(f, size, rows, cols), full[0, :, rows, cols].T, atol=1e-5)


def test_logistic_regression_matches_scikit_learn():
    rng = np.random.default_rng(1)
    y = (rng.random(3000) < 0.15).astype(np.int64)          # unbalanced, as pixels are
    x = rng.normal(size=(3000, 6)) * [1, 5, 0.2, 1, 30, 2] + [0, 3, -1, 0, 100, 0]
    x[:, 0] += 1.5 * y
    x[:, 3] -= 0.7 * y
    weight, bias = fit_logistic(torch.from_numpy(x), torch.from_numpy(y), c=0.05)
    scaler = StandardScaler().fit(x)
    ref = LogisticRegression(C=0.05, class_weight="balanced", tol=1e-12, max_iter=10000).fit(scaler.transform(x), y)
    ref_decision = ref.decision_function(scaler.transform(x))
    ours = (torch.from_numpy(x) @ weight + bias).numpy()
    np.testing.assert_allclose(ours, ref_decision, atol=1e-4)
    np.testing.assert_allclose(weight.numpy() * scaler.scale_, ref.coef_[0], atol=1e-5)


def test_a_single_class_is_a_clear_error():
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic(torch.randn(10, 3), torch.zeros(10))


def test_decision_map_is_the_linear_head_then_the_models_upsampling():
    f = torch.randn(1, 4, 6, 8, generator=torch.Generator().manual_seed(2))
    w, b = torch.tensor([0.5, -1.0, 2.0, 0.0]), 0.3
    conv = (f * w.view(1, 4, 1, 1)).sum(1, keepdim=True) + b
    assert torch.allclose(decision_map(f, w, b, (24, 32)), upsample(conv, (24, 32))[0, 0], atol=1e-5)


class PoolFeature(torch.nn.Module):
    """A 'model' whose decoder feature is the image average-pooled by 4 (stride 4, as the quick
    model's) and whose class logits carry no anomaly signal (noise from the last channel)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))

    def decoder_feature(self, x):
        return F.avg_pool2d(x, 4)

    def forward(self, x):
        noise = x[:, -1:]
        return torch.cat([noise, -noise, 0 * noise], 1), torch.cat([noise, 0 * noise], 1)


def _world(channel_of_image, n=6, size=32, seed=0):
    """Images whose channel ``channel_of_image(i)`` (0 or 1) marks the anomaly, a random 12-px
    square in the left half with a void ring, and whose other channel of the two marks a decoy
    square of inliers in the right half; channel 2 is noise. Labels: 1 anomaly, 0 inlier, 255 void."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        image = 0.05 * torch.rand(3, size, size, generator=g)
        image[2] = torch.rand(size, size, generator=g)
        label = torch.zeros(size, size, dtype=torch.long)
        r, c, rd, cd = (int(v) for v in torch.randint(0, size // 2 - 11, (4,), generator=g))
        label[r:r + 12, c:c + 12] = 255
        label[r + 1:r + 11, c + 1:c + 11] = 1
        carrier = channel_of_image(i)
        image[carrier] += (label == 1).float()
        image[1 - carrier, rd:rd + 12, size // 2 + cd:size // 2 + cd + 12] += 1
        items.append((image, label))
    return items


def test_a_feature_that_encodes_the_anomalies_gives_a_near_perfect_probe_and_energy_stays_blind():
    result = linear_probe(PoolFeature(), _world(lambda i: 0), progress=False)
    assert result["probe"]["AP"] > 0.95 and result["probe"]["FPR95"] < 0.05
    assert 0.35 < result["energy"]["AUROC"] < 0.65
    # ln σ(d) − ln p̂ with a blind energy term keeps most of the probe's ranking
    assert result["probe hybrid"]["AUROC"] > 0.9


def test_held_out_images_are_never_seen_by_the_probe_that_scores_them():
    # Even images mark the anomaly in channel 0 and a decoy in channel 1, odd images the other
    # way round. A probe fit on one fold flags the channel that marks the decoy in the other, so
    # scored honestly the anomalies rank *below* the inliers; a probe that had seen the scored
    # images (or all of them) would find them, as in the test above.
    honest = linear_probe(PoolFeature(), _world(lambda i: i % 2), folds=2, progress=False)
    assert honest["probe"]["AUROC"] < 0.3


def test_too_few_images_for_the_folds_is_a_clear_error():
    with pytest.raises(ValueError, match="folds"):
        linear_probe(PoolFeature(), _world(lambda i: 0, n=1), folds=2, progress=False)


def test_the_energy_row_matches_scikit_learn_on_the_pooled_pixels():
    world = _world(lambda i: 0, n=4)
    result = linear_probe(PoolFeature(), world, folds=2, progress=False)
    # rebuild the pooled energy map by hand: −ln Σ_k e^{s_k} with s = (n, −n, 0), n the last channel
    scores, labels = [], []
    for image, label in world:
        n = image[-1]
        e = -torch.logsumexp(torch.stack([n, -n, 0 * n]), 0)
        keep = label != 255
        scores.append(e[keep].numpy()), labels.append(label[keep].numpy())
    assert result["energy"]["AUROC"] == pytest.approx(roc_auc_score(np.concatenate(labels), np.concatenate(scores)), abs=1e-3)


def test_sampling_takes_each_class_up_to_per_image_and_no_void():
    world = _world(lambda i: 0, n=2)
    # each 32×32 image: a 10×10 anomaly inside a void ring of 44 pixels, 880 inlier pixels
    counts = [(int((label == 1).sum()), int((label == 0).sum())) for _, label in world]
    assert counts == [(100, 880), (100, 880)]
    x, y = _sample_fold(PoolFeature(), world, [0, 1], per_image=5000, rng=np.random.default_rng(0))
    assert int((y == 1).sum()) == 200 and int((y == 0).sum()) == 1760 and x.shape == (1960, 3)
    x, y = _sample_fold(PoolFeature(), world, [0, 1], per_image=30, rng=np.random.default_rng(0))
    assert int((y == 1).sum()) == 60 and int((y == 0).sum()) == 60 and x.shape == (120, 3)


class Recorder:
    """A stand-in stream that keeps every map it is given."""

    def __init__(self):
        self.maps = []

    def update(self, scores, labels):
        self.maps.append(scores.clone())


def test_the_probe_hybrid_is_log_sigmoid_of_the_probe_plus_energy():
    world = _world(lambda i: 0, n=2)
    streams = {name: Recorder() for name in SCORES}
    weight, bias = torch.tensor([2.0, -1.0, 0.5]), -0.7
    _score_fold(PoolFeature(), world, [0, 1], weight, bias, streams)
    for k, (image, _) in enumerate(world):
        d = upsample((F.avg_pool2d(image[None], 4) * weight.view(1, 3, 1, 1)).sum(1, keepdim=True) + bias, (32, 32))[0, 0]
        n = image[-1]
        e = -torch.logsumexp(torch.stack([n, -n, 0 * n]), 0)
        assert torch.allclose(streams["probe"].maps[k], d, atol=1e-5)
        # ln σ(d) = −ln(1 + e^{−d})
        assert torch.allclose(streams["probe hybrid"].maps[k], -torch.log1p(torch.exp(-d)) + e, atol=1e-5)
        assert torch.allclose(streams["energy"].maps[k], e, atol=1e-5)


def test_a_probe_fit_elsewhere_scores_every_image_with_what_it_learnt_there():
    world = _world(lambda i: i % 2)
    # fit on images that mark the anomaly in channel 1 (odd), score those that mark it in 0 (even)
    elsewhere = linear_probe(PoolFeature(), world[0::2], fit_on=world[1::2], progress=False)
    assert elsewhere["probe"]["AUROC"] < 0.3
    same_family = linear_probe(PoolFeature(), world[0::2], fit_on=_world(lambda i: 0, seed=5), progress=False)
    assert same_family["probe"]["AUROC"] > 0.95


def test_pasted_scenes_label_exactly_the_pasted_pixels():
    from dhlib.negatives import NegativeRecipe
    from dhlib.probe import pasted_scenes
    g = torch.Generator().manual_seed(3)
    scenes = []
    for _ in range(3):
        classes = torch.randint(0, 5, (64, 96), generator=g)
        classes[:8] = 255                                          # a void band at the top
        scenes.append((torch.rand(3, 64, 96, generator=g) * 0.4, classes))   # scene values below 0.4
    # one-colour negatives (value 0.9) with two classes, so either outline has pixels to cut
    negatives = [(torch.full((3, 60, 80), 0.9), torch.randint(0, 2, (60, 80), generator=g)) for _ in range(2)]
    recipe = NegativeRecipe(64, (0.5, 1.5), 32, 0.5, 2, 0.0, 8, 16, 1.0)
    out = pasted_scenes(scenes, negatives, recipe, count=3, seed=0)
    again = pasted_scenes(scenes, negatives, recipe, count=3, seed=0)
    for (mixed, ood), (scene, classes), (mixed2, ood2) in zip(out, scenes, again):
        pasted = ood == 1
        assert pasted.any() and torch.equal(mixed, mixed2) and torch.equal(ood, ood2)
        assert torch.allclose(mixed[:, pasted], torch.full_like(mixed[:, pasted], 0.9))
        assert torch.equal(mixed[:, ~pasted], scene[:, ~pasted])
        assert torch.equal(ood[~pasted] == 255, classes[~pasted] == 255)
        assert set(torch.unique(ood).tolist()) <= {0, 1, 255}

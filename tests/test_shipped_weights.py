"""The shipped weights still are what their cards say.

Each card's metrics are re-measured here on SynthCity regenerated in memory, with metrics
computed independently of dhlib (numpy bincount, scikit-learn). When the generator or the
model changes, these tests say that the shipped weights are stale: rebuild them with
``make pretrain`` / ``make flow`` / ``make finetune``.
"""
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from dhlib.config import load_profile
from dhlib.data import synthcity
from dhlib.data.labels import LABEL_TO_TRAIN
from dhlib.models import weights

PROFILE = load_profile("quick")
TOLERANCE = 0.005  # half a point of mIoU / AP


def _tensor(image):
    return torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)


def _val_miou(model) -> float:
    k = PROFILE.num_classes
    confusion = np.zeros((k, k), np.int64)
    with torch.no_grad():
        for i in range(PROFILE.synthcity_val):
            image, ids = synthcity.render_scene(PROFILE.synthcity_seed, i, PROFILE.synthcity_height,
                                                PROFILE.synthcity_width, stream="val")
            target = LABEL_TO_TRAIN[ids].astype(np.int64).ravel()
            seg, _ = model(_tensor(image))
            prediction = seg[0].argmax(0).numpy().ravel()
            keep = target != 255
            confusion += np.bincount(target[keep] * k + prediction[keep], minlength=k * k).reshape(k, k)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


def _hybrid(model, image) -> np.ndarray:
    """ln P(out|x) − ln Σ_k exp s_k(x), written out here rather than taken from dhlib.scores."""
    with torch.no_grad():
        seg, ood = model(_tensor(image))
    return (torch.log_softmax(ood, 1)[0, 1] - torch.logsumexp(seg, 1)[0]).numpy()


def test_shipped_files_fit_the_size_budget():
    total = sum(w.verify().stat().st_size for w in weights.REGISTRY.values())
    assert total <= 12e6, f"shipped weights take {total / 1e6:.1f} MB (budget 12 MB)"


def test_closed_set_weights_match_their_card():
    w = weights.get("quick-closed-set")
    model = weights.load_model(w.name)
    measured = _val_miou(model)
    assert abs(measured - w.card["metrics"]["val_mIoU"]) <= TOLERANCE, (
        f"val mIoU {measured:.4f} vs card {w.card['metrics']['val_mIoU']:.4f}: stale weights, run `make pretrain`")


def test_flow_weights_match_their_card(tmp_path):
    """The shipped flow's held-out bits/dim, on the val crops its card names, regenerated here."""
    from dhlib.data.cityscapes import CityscapesSegmentation
    from dhlib.flows import build_flow
    from dhlib.flows.pretrain import fixed_crops, held_out_bits_per_dim
    w = weights.get("quick-flow")
    # only the val split matters; a scene's pixels depend on its split and index alone
    profile = load_profile("quick", cityscapes_root=str(tmp_path / "cityscapes"),
                           ade20k_root=str(tmp_path / "ade20k/ADEChallengeData2016"),
                           fishyscapes_root=str(tmp_path / "fishyscapes"), synthcity_train=1,
                           synthcity_negatives=1, synthcity_anomaly_test=1)
    synthcity.export(tmp_path, profile, workers=1, progress=False)
    flow = build_flow(PROFILE)
    flow.load_state_dict(w.state_dict())
    val = CityscapesSegmentation(profile.cityscapes_root, "val")
    measured = held_out_bits_per_dim(flow.eval(), fixed_crops(val, PROFILE.flow_val_crops, PROFILE.flow_crop))
    assert abs(measured - w.card["metrics"]["val_bits_per_dim"]) <= 0.005, (
        f"{measured:.4f} bits/dim vs card {w.card['metrics']['val_bits_per_dim']:.4f}: stale flow, run `make flow`")


def test_densehybrid_weights_match_their_card():
    w = weights.get("quick-densehybrid")
    card = w.card
    model = weights.load_model(w.name)
    measured = _val_miou(model)
    assert abs(measured - card["metrics"]["val_mIoU"]) <= TOLERANCE, "stale weights: run `make finetune`"
    scores, labels = [], []
    for i in range(PROFILE.synthcity_anomaly_test):
        image, ood, _ = synthcity.render_anomaly_scene(PROFILE.synthcity_seed, i, PROFILE.synthcity_height,
                                                       PROFILE.synthcity_width)
        keep = ood != 255
        scores.append(_hybrid(model, image)[keep])
        labels.append(ood[keep])
    ap = average_precision_score(np.concatenate(labels), np.concatenate(scores))
    assert abs(ap - card["metrics"]["test"]["hybrid"]["AP"]) <= TOLERANCE, "stale weights: run `make finetune`"


def test_score_threshold_is_the_95_percent_tpr_point_of_its_held_out_split():
    w = weights.get("quick-densehybrid")
    threshold = w.card["threshold"]
    first = PROFILE.synthcity_anomaly_test  # the split the card names: right after the test scenes
    assert f"scenes {first}-" in threshold["split"] and threshold["tpr"] == 0.95
    model = weights.load_model(w.name)
    positives = []
    for i in range(first, first + 50):
        image, ood, _ = synthcity.render_anomaly_scene(PROFILE.synthcity_seed, i, PROFILE.synthcity_height,
                                                       PROFILE.synthcity_width)
        positives.append(_hybrid(model, image)[ood == 1])
    positives = np.concatenate(positives)
    # by definition 95 % of the held-out anomaly pixels score at least the threshold
    assert np.mean(positives >= threshold["value"]) == pytest.approx(0.95, abs=1e-3)

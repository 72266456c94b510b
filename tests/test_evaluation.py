import hashlib
import json

import numpy as np
import pytest
import torch

from dhlib.__main__ import main
from dhlib.data import Fishyscapes
from dhlib.evaluation import THKLOODEvaluation
from dhlib.metrics import ood_metrics
from dhlib.models import SmallDeepLabTH, save_state_dict
from dhlib.scores import SCORES


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = SmallDeepLabTH(19).eval()
    with torch.no_grad():  # a non-trivial OOD head
        m.logits_ood.conv.weight.normal_(0, 0.5)
        m.attention.gamma.fill_(0.3)
    return m


def test_evaluation_pools_all_scores_and_matches_exact_metrics(tiny_profile, model, tmp_path):
    data = Fishyscapes(tiny_profile.path("fishyscapes_root"))
    ev = THKLOODEvaluation(model, data, keep_maps=2, per_image=True)
    table = ev.run(progress=False)
    assert table["score"] == list(SCORES)
    # the pooled (streaming) numbers agree with exact metrics on all pixels
    with torch.no_grad():
        outs = [model(data[i][0][None]) for i in range(len(data))]
    labels = torch.cat([data[i][1].flatten() for i in range(len(data))])
    for k, name in enumerate(table["score"]):
        maps = torch.cat([SCORES[name](seg, ood)[0].flatten() for seg, ood in outs])
        exact = ood_metrics(maps, labels)
        for key in ("AP", "AUROC", "FPR95"):
            assert table[key][k] == pytest.approx(exact[key], abs=1e-4), (name, key)
    assert len(ev.results["kept"]) == 2 and ev.results["per_image"]["hybrid"]
    o = ev.results["open_set"]
    assert o is not None and 0 <= o["open_mIoU"] <= 1 and np.isfinite(o["threshold"])
    assert "hybrid" in ev.format_table() and "open-mIoU" in ev.format_table()
    comp = ev.component_metrics("hybrid", progress=False)
    assert 0 <= comp["mean_F1"] <= 1 and comp["components_gt"] > 0
    assert "mean F1" in ev.format_table()
    paths = ev.figures(tmp_path)
    assert {p.name for p in paths} == {"eval_curves.png", "eval_score_distributions.png",
                                       "eval_heatmaps.png", "eval_confidence.png"}


def test_open_set_threshold_and_miou_match_a_brute_force_reference(tiny_profile, model):
    """The hybrid threshold is the ⌈0.95·P⌉-th largest anomaly score of the first half of the
    images; open-mIoU scores the other half against scikit-learn's confusion matrix."""
    from sklearn.metrics import confusion_matrix
    data = Fishyscapes(tiny_profile.path("fishyscapes_root"))
    ev = THKLOODEvaluation(model, data, keep_maps=0)
    ev.run(progress=False)
    with torch.no_grad():
        outs = [model(data[i][0][None]) for i in range(len(data))]
    hybrid = [SCORES["hybrid"](seg, ood)[0].numpy().ravel() for seg, ood in outs]
    labels = [data[i][1].numpy().ravel() for i in range(len(data))]
    n_cal = len(data) // 2
    calibration = np.concatenate([h[y == 1] for h, y in zip(hybrid[:n_cal], labels[:n_cal])])
    tau = np.sort(calibration)[::-1][int(np.ceil(0.95 * calibration.size)) - 1]
    k = outs[0][0].shape[1]
    truth, predicted = [], []
    for i in range(n_cal, len(data)):
        target, y = data.semantic_target(i).numpy().ravel(), labels[i]
        scored = ((y == 0) & (target != 255)) | (y == 1)
        closed = outs[i][0][0].argmax(0).numpy().ravel()
        truth.append(np.where(y == 1, k, target)[scored])
        predicted.append(np.where(hybrid[i] >= tau, k, closed)[scored])
    cm = confusion_matrix(np.concatenate(truth), np.concatenate(predicted), labels=range(k + 1))
    with np.errstate(invalid="ignore"):
        iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    o = ev.results["open_set"]
    assert o["threshold"] == pytest.approx(float(tau), abs=1e-6)
    assert o["open_mIoU"] == pytest.approx(float(np.nanmean(iou[:k])), abs=1e-9)


def test_evaluate_command(tiny_profile, model, tmp_path, capsys):
    checkpoint = save_state_dict(model, tmp_path / "model.pt")
    args = ["evaluate", "--checkpoint", str(checkpoint), "--set", "skip_stride=4"]  # the fixture's layout
    for field in ("cityscapes_root", "ade20k_root", "fishyscapes_root"):
        args += ["--set", f"{field}={getattr(tiny_profile, field)}"]
    for field, value in (("synthcity_height", 64), ("synthcity_width", 128), ("synthcity_train", 6),
                         ("synthcity_val", 4), ("synthcity_negatives", 8), ("synthcity_anomaly_test", 4),
                         ("figures_dir", str(tmp_path / "figs"))):
        args += ["--set", f"{field}={value}"]
    main(args)
    out = capsys.readouterr().out
    assert "max_logit" in out and "AUROC" in out and (tmp_path / "figs/eval_curves.png").exists()
    # the JSON record holds what the table printed, and names the file and data it measured
    record = json.loads((tmp_path / "figs/eval_results.json").read_text())
    assert record["checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert record["dataset"]["images"] == 4 and set(record["scores"]) == set(SCORES)
    printed = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()
               if line.split() and line.split()[0] in SCORES}
    assert {k: round(100 * v["AP"], 2) for k, v in record["scores"].items()} == printed
    with pytest.raises(SystemExit, match="needs --checkpoint"):
        main(["evaluate"])


def test_component_metrics_take_the_track_preset(tiny_profile, model):
    ev = THKLOODEvaluation(model, Fishyscapes(tiny_profile.path("fishyscapes_root")), keep_maps=0)
    ev.run(progress=False)
    comp = ev.component_metrics("hybrid", progress=False, track="obstacle", min_gt_size=1)
    assert (comp["track"], comp["min_pred_size"], comp["min_gt_size"]) == ("obstacle", 50, 1)
    assert "obstacle track" in ev.format_table()


def test_evaluate_command_passes_the_track(monkeypatch):
    import dhlib.__main__ as cli
    seen = {}
    monkeypatch.setattr(cli, "evaluate", lambda profile, checkpoint, *args, **kwargs: seen.update(kwargs))
    main(["evaluate", "--checkpoint", "model.pt", "--track", "anomaly"])
    assert seen["track"] == "anomaly"
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", "model.pt", "--track", "road"])


def test_predicted_classes_is_numpys_argmax_with_ties():
    from dhlib.evaluation import predicted_classes
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 3, size=(19, 33, 65)).astype(np.float32)  # many tied maxima
    logits[:, 0, 0] = 1.0  # every class tied: the first wins
    got = predicted_classes(torch.from_numpy(logits)).numpy()
    np.testing.assert_array_equal(got, np.argmax(logits, axis=0))
    assert got[0, 0] == 0

"""Turning a finished run into a shipped file and its model card (``python -m dhlib ship-weights``).

The card's metrics are measured on the file as stored (float16), so the test that
re-evaluates the shipped weights can hold them to the card.

* ``quick-closed-set`` comes from the pretraining run (``pretrain_dir``). A closed-set
  segmenter has no OOD head, so the never-trained ``logits_ood`` tensors are left out of the
  file: it loads as a one-head checkpoint, like NVIDIA's, and fine-tuning starts that head fresh.
* ``quick-flow`` comes from the flow's pre-training run (``runs_dir`` of ``train-flow``); its card
  holds the held-out bits/dim of the file as stored.
* ``quick-densehybrid`` comes from the fine-tuning run (``runs_dir``). Its card also holds the
  threshold that ``python -m dhlib score`` flags pixels at: the hybrid score at 95 % TPR on
  held-out anomaly scenes that the test tree does not contain.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .models import weights as shipped
from .provenance import wall_time_from_log

CALIBRATION_SCENES = 50  # held-out anomaly scenes for the score threshold


def run_record(run_dir: Path) -> dict:
    """Provenance and training length of a finished run folder."""
    info_path, log_path = run_dir / "run_info.json", run_dir / "train_log.jsonl"
    missing = [p for p in (run_dir / "model.pt", info_path, log_path) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a finished training run (missing: "
                                f"{', '.join(p.name for p in missing)}); train it first")
    steps = max(json.loads(line)["step"] for line in log_path.read_text().splitlines())
    return json.loads(info_path.read_text()) | {"steps": steps, "wall_time_s": wall_time_from_log(log_path)}


def val_metrics(model, profile) -> dict:
    """Closed-set val mIoU and per-class IoU (classes that occur in SynthCity)."""
    from .data.labels import CLASS_NAMES
    from .metrics import iou_per_class
    from .train import validation_confusion
    iou = iou_per_class(validation_confusion(model, profile))
    return {"val_mIoU": float(np.nanmean(iou)),
            "val_IoU": {CLASS_NAMES[k]: round(float(v), 4) for k, v in enumerate(iou) if not np.isnan(v)}}


def warm_start_record(profile) -> dict | None:
    """The file a warm-started pretraining began from (``pretrain_init``): its hash, and the
    record of the run that wrote it, so the card traces the shipped file back to random weights."""
    from .train_setup import resolve_pretrain_init
    path, digest = resolve_pretrain_init(profile)
    if path is None:
        return None
    return {"file": profile.pretrain_init, "sha256": digest, "run": run_record(path.parent)}


def ship_closed_set(profile) -> dict:
    """``weights/quick-closed-set.pt`` and its card from the pretraining run."""
    run_dir = profile.path("pretrain_dir")
    record = run_record(run_dir)
    if (start := warm_start_record(profile)) is not None:
        record["warm_start"] = start
    state = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("logits_ood.")}
    weights = shipped.get("quick-closed-set")
    card = {"produced_by": "make pretrain", "run": record}
    shipped.write_file_and_card(weights, state, card)
    metrics = val_metrics(shipped.load_model(weights.name, profile=profile), profile)
    return shipped.write_file_and_card(weights, state, card | {"metrics": metrics})


def flow_bits_per_dim(flow, profile) -> float:
    """Held-out bits/dim on the val crops that ``train-flow`` reports (the same fixed crops)."""
    from .data.cityscapes import CityscapesSegmentation
    from .flows.pretrain import fixed_crops, held_out_bits_per_dim
    val = CityscapesSegmentation(profile.path("cityscapes_root"), "val")
    return held_out_bits_per_dim(flow.eval(), fixed_crops(val, profile.flow_val_crops, profile.flow_crop))


def ship_flow(profile) -> dict:
    """``weights/quick-flow.pt`` and its card (held-out bits/dim) from the flow's pre-training run."""
    from .flows import build_flow
    run_dir = profile.path("runs_dir")
    needed = [run_dir / name for name in ("flow.pt", "flow_run_info.json", "flow_log.jsonl", "flow_summary.json")]
    if missing := [p.name for p in needed if not p.is_file()]:
        raise FileNotFoundError(f"{run_dir} is not a finished flow pre-training (missing: {', '.join(missing)}); "
                                "run `python -m dhlib train-flow` with the same settings first")
    summary = json.loads((run_dir / "flow_summary.json").read_text())
    record = json.loads((run_dir / "flow_run_info.json").read_text()) | {
        "steps": summary["steps"], "wall_time_s": wall_time_from_log(run_dir / "flow_log.jsonl")}
    state = torch.load(run_dir / "flow.pt", map_location="cpu", weights_only=True)
    weights = shipped.get("quick-flow")
    card = {"produced_by": "make flow", "run": record}
    shipped.write_file_and_card(weights, state, card)
    flow = build_flow(profile)
    flow.load_state_dict(weights.state_dict())
    metrics = {"val_bits_per_dim": round(flow_bits_per_dim(flow, profile), 4),
               "val_bits_per_dim_float32": summary["val_bits_per_dim"],
               "val_crops": f"{profile.flow_val_crops} fixed {profile.flow_crop}×{profile.flow_crop} crops of "
                            f"the SynthCity val split (flows.pretrain.fixed_crops)",
               "parameters": summary["parameters"]}
    return shipped.write_file_and_card(weights, state, card | {"metrics": metrics})


def ship_densehybrid(profile) -> dict:
    """``weights/quick-densehybrid.pt`` and its card (metrics, score threshold) from the fine-tuning run."""
    from .data import Fishyscapes
    from .data.synthcity import held_out_anomaly_scenes
    from .evaluation import THKLOODEvaluation
    from .metrics import threshold_at_tpr
    from .scores import SCORES
    run_dir = profile.path("runs_dir")
    record = run_record(run_dir)
    state = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    weights = shipped.get("quick-densehybrid")
    card = {"produced_by": "make finetune", "run": record}
    shipped.write_file_and_card(weights, state, card)
    model = shipped.load_model(weights.name, profile=profile)
    metrics = val_metrics(model, profile)
    evaluation = THKLOODEvaluation(model, Fishyscapes(profile.path("fishyscapes_root"), profile.fishyscapes_split))
    table = evaluation.run(progress=False)
    metrics["test"] = {s: {k: round(table[k][i], 5) for k in ("AP", "AUROC", "FPR95")}
                       for i, s in enumerate(table["score"])}
    first, scenes = held_out_anomaly_scenes(profile, CALIBRATION_SCENES)
    scores, labels = [], []
    with torch.no_grad():
        for image, label in scenes:
            seg, ood = model(image[None])
            scores.append(SCORES["hybrid"](seg, ood)[0].flatten())
            labels.append(label.flatten())
    threshold = {"score": "hybrid", "tpr": 0.95, "value": threshold_at_tpr(torch.cat(scores), torch.cat(labels)),
                 "split": f"SynthCity anomaly scenes {first}-{first + CALIBRATION_SCENES - 1} "
                          f"(synthcity_seed {profile.synthcity_seed}), held out of the test tree "
                          f"(scenes 0-{first - 1})"}
    return shipped.write_file_and_card(weights, state, card | {"metrics": metrics, "threshold": threshold})


SHIP = {"quick-closed-set": ship_closed_set, "quick-flow": ship_flow, "quick-densehybrid": ship_densehybrid}

"""Evaluation: a two-head model × an anomaly dataset → metrics and score maps.

One pass over the dataset runs the model once per image and computes all six anomaly scores
of :mod:`dhlib.scores` from the same logits. Each image's maps then go to small
accumulators, one concern each: pooled AP / AUROC / FPR95
(:class:`~dhlib.metrics.StreamingOODMetrics`: constant memory, any number of images),
exact per-image metrics on request, a pixel sample for the score histograms, a few kept
maps for figures, and, when the dataset has the scenes' semantic labels (SynthCity writes
them), closed and open-set mIoU with a threshold calibrated on part of the data.
``component_metrics()`` adds SegmentMeIfYouCan's component-level sIoU / PPV / mean F1.
Figures of the results are drawn by :mod:`dhlib.viz`.

:func:`evaluate_checkpoint` is the one entry point the command line, the demo and the
ablation share: load a checkpoint into a model, evaluate, and keep the summary.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from .component_metrics import ComponentMetrics
from .metrics import (OpenSetConfusion, StreamingOODMetrics, best_f1_threshold,
                      confusion_matrix, mean_iou, ood_metrics, threshold_at_tpr)
from .scores import SCORES

TABLE_METRICS = ("AP", "AUROC", "FPR95")


def predicted_classes(seg_logits: torch.Tensor) -> torch.Tensor:
    """The closed-set prediction ``argmax_k s_k(x)`` of ``K×H×W`` logits, as an ``H×W`` map.

    ``max(0).indices`` is ``argmax(0)``, the first maximum on ties too; on a CPU it is several
    times faster at reducing over the outermost of three dimensions."""
    return seg_logits.max(0).indices


class PixelSample:
    """A few random pixels per class and image, per score: enough for a histogram of each
    score's inlier and anomaly values without keeping every pixel."""

    def __init__(self, names, per_image: int, seed: int):
        self.per_image, self.rng = per_image, np.random.default_rng(seed)
        self.values = {name: {0: [], 1: []} for name in names}

    def update(self, maps: dict, label: torch.Tensor) -> None:
        pixels = {cls: torch.nonzero(label.flatten() == cls).flatten().numpy() for cls in (0, 1)}
        for name, m in maps.items():
            for cls, idx in pixels.items():
                if idx.size:
                    pick = self.rng.choice(idx, min(self.per_image, idx.size), replace=False)
                    self.values[name][cls].append(m.flatten()[pick].numpy())

    def compute(self) -> dict:
        return {name: {cls: np.concatenate(v) if v else np.zeros(0) for cls, v in by_class.items()}
                for name, by_class in self.values.items()}


class CalibratedOpenSet:
    """Open-set confusion with the hybrid threshold chosen on the data itself.

    The first ``calibration_images`` images only collect hybrid scores; the threshold is then
    set at 95 % TPR on them (the operating point the papers report), and the remaining images
    are scored with it. Calibrating and scoring on disjoint images keeps the threshold honest.
    """

    def __init__(self, calibration_images: int):
        self.calibration_images = calibration_images
        self.seen, self.anomaly_scores, self.confusion = 0, [], None

    def update(self, seg_logits, hybrid, semantic_target, label) -> None:
        """One image: its class logits ``1×K×H×W``, hybrid map, semantic and OOD labels."""
        self.seen += 1
        if self.seen <= self.calibration_images:
            # τ at 95 % TPR is a quantile of the anomaly pixels' scores alone: keeping only
            # those holds memory to the anomalies' share of the calibration images
            self.anomaly_scores.append(hybrid.flatten()[label.flatten() == 1])
            return
        if self.confusion is None:
            scores = torch.cat(self.anomaly_scores)
            tau = threshold_at_tpr(scores, torch.ones_like(scores, dtype=torch.uint8))
            self.confusion, self.anomaly_scores = OpenSetConfusion(seg_logits.shape[1], tau), []
        self.confusion.update(predicted_classes(seg_logits[0]), hybrid, semantic_target, label)

    def compute(self) -> dict | None:
        if self.confusion is None:  # every image went to calibration
            return None
        return self.confusion.compute() | {"threshold": self.confusion.threshold}


class THKLOODEvaluation:
    """Evaluate ``model`` on ``dataset`` (items ``(image 3×H×W in [0,1], ood_label H×W)``).

    The name is the released DenseHybrid code's evaluation class (evaluations/evaluations.py),
    kept so the two codebases read side by side: an OOD evaluation of a two-head ("TH", as in
    DeepWV3PlusTH) model; the released code does not spell out "KL".

    ``keep_maps`` images keep their score maps for figures; ``per_image=True`` also records
    exact per-image metrics; ``calibration_fraction`` of the images (the first ones) choose
    the open-set threshold when the dataset has ``semantic_target``.
    """

    def __init__(self, model, dataset, scores=None, keep_maps: int = 4, per_image: bool = False,
                 calibration_fraction: float = 0.5, sample_pixels: int = 400, seed: int = 0):
        self.model, self.dataset = model, dataset
        self.score_fns = dict(scores or SCORES)
        self.keep_maps, self.per_image = keep_maps, per_image
        self.calibration_fraction, self.sample_pixels, self.seed = calibration_fraction, sample_pixels, seed
        self.results = None

    @torch.no_grad()
    def score_maps(self, image) -> tuple[torch.Tensor, dict]:
        """The class logits ``1×K×H×W`` and every score's ``H×W`` map of one image."""
        self.model.eval()
        seg, ood = self.model(image[None].to(next(self.model.parameters()).device))
        seg, ood = seg.float().cpu(), ood.float().cpu()
        return seg, {name: fn(seg, ood)[0] for name, fn in self.score_fns.items()}

    def _accumulators(self) -> dict:
        names = list(self.score_fns)
        open_set = None
        if getattr(self.dataset, "semantic_dir", None) is not None:
            open_set = CalibratedOpenSet(int(len(self.dataset) * self.calibration_fraction))
        return {"streams": {name: StreamingOODMetrics() for name in names},
                "per_image": {name: [] for name in names},
                "samples": PixelSample(names, self.sample_pixels, self.seed),
                "kept": [], "open_set": open_set}

    def _update(self, acc: dict, i: int, image, label, seg, maps) -> None:
        if (label != 255).any():
            for name, m in maps.items():
                acc["streams"][name].update(m, label)
        if self.per_image and (label == 1).any() and (label == 0).any():
            for name, m in maps.items():
                acc["per_image"][name].append(ood_metrics(m, label))
        acc["samples"].update(maps, label)
        if acc["open_set"] is not None:
            acc["open_set"].update(seg, maps["hybrid"], self.dataset.semantic_target(i), label)
        if len(acc["kept"]) < self.keep_maps:
            acc["kept"].append({"image": image, "label": label, "prediction": predicted_classes(seg[0]),
                                "confidence": torch.softmax(seg[0], 0).amax(0), "maps": maps})

    @torch.no_grad()
    def run(self, progress: bool = True) -> dict:
        """Evaluate; returns a tidy table ``{'score': [...], 'AP': [...], 'AUROC': [...], 'FPR95': [...]}``
        and stores everything else in ``self.results``."""
        acc = self._accumulators()
        for i in tqdm(range(len(self.dataset)), desc="evaluating", disable=not progress):
            image, label = self.dataset[i]
            seg, maps = self.score_maps(image)
            self._update(acc, i, image, label, seg, maps)
        table = {"score": list(acc["streams"])}
        pooled = [stream.compute() for stream in acc["streams"].values()]
        table |= {key: [m[key] for m in pooled] for key in TABLE_METRICS}
        self.results = {"table": table, "streams": acc["streams"], "kept": acc["kept"],
                        "per_image": acc["per_image"] if self.per_image else None,
                        "samples": acc["samples"].compute(),
                        "open_set": acc["open_set"].compute() if acc["open_set"] else None}
        return table

    @torch.no_grad()
    def component_metrics(self, score: str = "hybrid", min_gt_size: int | None = None, progress: bool = True,
                          track: str | None = None, min_pred_size: int | None = None) -> dict:
        """SegmentMeIfYouCan component metrics of one score (a second pass over the data).

        The map is thresholded at the pooled best pixel-F1 threshold of ``run()``'s statistics.
        ``track`` ('anomaly' / 'obstacle') takes the benchmark's size limits; explicit sizes
        override them (see :class:`~dhlib.component_metrics.ComponentMetrics`).
        """
        if self.results is None:
            raise RuntimeError("call run() before component_metrics()")
        threshold = best_f1_threshold(self.results["streams"][score])
        components = ComponentMetrics(threshold, min_gt_size=min_gt_size, min_pred_size=min_pred_size, track=track)
        for i in tqdm(range(len(self.dataset)), desc=f"components ({score})", disable=not progress):
            image, label = self.dataset[i]
            components.update(self.score_maps(image)[1][score], label)
        result = components.compute() | {"threshold": threshold, "score": score}
        self.results["components"] = result
        return result

    def format_table(self) -> str:
        """The pooled metrics as aligned text, best AP first."""
        return format_results(self.results)

    def figures(self, out_dir="figures", prefix: str = "eval") -> list:
        """Write ROC/PR curves, score distributions, anomaly heatmaps and confidence maps."""
        from . import viz
        if self.results is None:
            raise RuntimeError("call run() before figures()")
        return viz.evaluation_figures(self.results, out_dir, prefix)


def format_results(results: dict) -> str:
    """``THKLOODEvaluation.results`` as aligned text: the score table (best AP first), then
    open-set mIoU and component metrics where they were measured."""
    t = results["table"]
    lines = [f"{'score':15s} {'AP':>7s} {'AUROC':>7s} {'FPR95':>7s}"]
    lines += [f"{t['score'][i]:15s} {100 * t['AP'][i]:7.2f} {100 * t['AUROC'][i]:7.2f} "
              f"{100 * t['FPR95'][i]:7.2f}" for i in np.argsort(t["AP"])[::-1]]
    if results["open_set"]:
        o = results["open_set"]
        lines.append(f"closed mIoU {100 * o['mIoU']:.2f}, open-mIoU {100 * o['open_mIoU']:.2f} "
                     f"(hybrid threshold at 95% TPR: {o['threshold']:.3f})")
    if results.get("components"):
        c = results["components"]
        track = f", {c['track']} track" if c.get("track") else ""
        lines.append(f"components ({c['score']}{track}, pixel-F1 threshold {c['threshold']:.3f}): sIoU "
                     f"{100 * c['sIoU_gt']:.2f}, PPV {100 * c['PPV']:.2f}, mean F1 {100 * c['mean_F1']:.2f}")
    return "\n".join(lines)


def summary(results: dict) -> dict:
    """The JSON-ready part of ``THKLOODEvaluation.results``: each score's AP / AUROC / FPR95,
    open-set mIoU and the hybrid's component metrics (None where not measured)."""
    t = results["table"]
    components = results.get("components")
    return {"scores": {name: {k: t[k][i] for k in TABLE_METRICS} for i, name in enumerate(t["score"])},
            "open_mIoU": (results["open_set"] or {}).get("open_mIoU"),
            "components_hybrid": {k: v for k, v in components.items() if k != "F1"} if components else None}


def evaluate_checkpoint(model, checkpoint, dataset, *, components: bool = True, track: str | None = None,
                        progress: bool = True, loaded=None) -> THKLOODEvaluation:
    """Load ``checkpoint`` into ``model``, evaluate it on ``dataset`` (all six scores) and, with
    ``components``, add the hybrid's component metrics (``track``: SegmentMeIfYouCan limits).

    The model stays on its device. The checkpoint's layout (which kind of file it was) is kept
    as ``evaluation.layout``. ``loaded``: the report of ``load_checkpoint(model, checkpoint)``
    when the caller has already loaded it (to check the file before writing any data); the
    file, which can be a paper-tier checkpoint of hundreds of MB, is then not read again.
    """
    from .models import load_checkpoint
    layout = (loaded or load_checkpoint(model, checkpoint)).layout
    evaluation = THKLOODEvaluation(model, dataset)
    evaluation.layout = layout
    evaluation.run(progress=progress)
    if components:
        evaluation.component_metrics("hybrid", track=track, progress=progress)
    return evaluation


@torch.no_grad()
def closed_set_confusion(model, dataset, num_classes: int) -> np.ndarray | int:
    """Confusion matrix of ``model`` on a segmentation dataset (full images); 0 when empty."""
    device = next(model.parameters()).device
    model.eval()
    total = 0
    for i in range(len(dataset)):
        image, target = dataset[i]
        seg, _ = model(image[None].to(device))
        total = total + confusion_matrix(predicted_classes(seg[0]).cpu(), target, num_classes)
    return total


def closed_set_miou(model, dataset, num_classes: int) -> float:
    """Closed-set mIoU of ``model`` on a segmentation dataset; NaN for an empty one."""
    total = closed_set_confusion(model, dataset, num_classes)
    return mean_iou(total) if not isinstance(total, int) else math.nan

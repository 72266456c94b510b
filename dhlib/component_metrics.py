"""Component-level metrics of SegmentMeIfYouCan (Chan et al., NeurIPS 2021 datasets track).

Pixel metrics reward a detector that covers one large anomaly and misses ten small ones.
The benchmark therefore also scores connected components: how well each labelled object is
covered (sIoU), how much of each predicted blob is anomalous (PPV), and F1 over objects.
"""
from __future__ import annotations

import numpy as np
import torch

from .data.labels import IGNORE_INDEX

SIOU_THRESHOLDS = np.linspace(0.25, 0.75, 11)  # τ = 0.25, 0.30, ..., 0.75


# What the benchmark code does, and therefore what this class does. References are to
# SegmentMeIfYouCan/road-anomaly-benchmark (commit 1c7804e),
# road_anomaly_benchmark/metrics/instance_segmentation.py:
#   default_instancer, l.20-58 (forming components)
#     - predicted anomaly = score > threshold, strictly (l.25-26);
#     - void pixels (label 255) are removed from the prediction *before* labelling (l.32);
#     - ground truth (label 1) and prediction are labelled with 8-connectivity (l.35-37);
#     - predicted components with fewer than thresh_segsize pixels are dropped (l.40-45),
#       sized on the whole image, i.e. before small ground-truth components are voided;
#     - ground-truth components with fewer than thresh_instsize pixels are set to void (l.46-50);
#     - both label maps are restricted to the non-void pixels (l.53, l.58).
#   segment_metrics, l.97-153 (per image)
#     - sIoU of each ground-truth component with the adjusted union (l.109-120);
#     - PPV of each predicted component: its share of ground-truth pixels (l.127-137), and
#       the symmetric sIoU of each predicted component (l.135), reported but not counted;
#     - TP = #{sIoU ≥ τ}, FN = #{sIoU < τ}, FP = #{PPV < τ} (l.147-151; FP from the
#       predicted components' sIoU is commented out there, l.150).
#   MetricSegment.aggregate, l.297-342 (over the dataset)
#     - mean sIoU and mean PPV over all components of all images, not per-image means (l.299-301);
#     - TP, FN, FP summed over the images, F1(τ) from the sums, mean F1 over τ (l.307-330).
#   MetricSegment.configs, l.198-220: the track presets below.
#   MetricSegment.get_thresh_p_from_curve, l.362-374: the threshold is the best pixel-F1 one.
TRACK_SIZES = {"anomaly": {"min_pred_size": 500, "min_gt_size": 100},   # SegEval-AnomalyTrack
               "obstacle": {"min_pred_size": 50, "min_gt_size": 10}}    # SegEval-ObstacleTrack


def _adjusted_iou(own: np.ndarray, other: np.ndarray, k: int) -> float:
    """Adjusted IoU of component ``k`` of the label map ``own`` against the components of
    ``other`` that touch it (both flattened to the region of interest)::

        sIoU(k) = |k ∩ K̂| / (|k ∪ K̂| − |A|),   K̂ = ∪ components of ``other`` touching k,
                                                 A = pixels of K̂ in other components of ``own``
    """
    in_k = own == k
    touching = np.unique(other[in_k & (other > 0)])
    covered = np.isin(other, touching)
    intersection = np.count_nonzero(in_k & covered)
    # A: pixels of the touching blobs that lie on other objects, so that one blob over two
    # objects is not counted against either of them
    adjustment = np.count_nonzero(covered & (own > 0) & ~in_k)
    union = np.count_nonzero(covered) + np.count_nonzero(in_k) - intersection - adjustment
    return intersection / union


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")


class ComponentMetrics:
    """SegmentMeIfYouCan's component-level metrics, accumulated over images; the same
    counting as the benchmark's released code (see the references above this class).

    Per image: predicted anomaly = score > threshold (strictly), void pixels removed; ground
    truth and prediction are split into 8-connected components; predicted components
    smaller than ``min_pred_size`` pixels are dropped, then ground-truth components smaller
    than ``min_gt_size`` become void; everything is evaluated on the non-void pixels.
    For a ground-truth component k (see :func:`_adjusted_iou`)::

        sIoU(k) = |k ∩ K̂| / (|k ∪ K̂| − |A|)

    and for a predicted component k̂, ``PPV(k̂) = |k̂ ∩ ground-truth anomalies| / |k̂|``. For each
    τ: TP = #{k : sIoU ≥ τ}, FN = #{k : sIoU < τ}, FP = #{k̂ : PPV < τ}, summed over the
    dataset; F1(τ) = 2TP / (2TP + FN + FP); the benchmark reports the mean F1 over
    τ ∈ {0.25, 0.30, ..., 0.75} and the means of sIoU and PPV over all components.

    ``track='anomaly'`` or ``'obstacle'`` takes the benchmark's size limits (``TRACK_SIZES``);
    ``min_gt_size`` / ``min_pred_size`` given explicitly override the preset. With neither,
    ground-truth components under 10 pixels are voided and no predicted one is dropped (this
    package's earlier default, not one of the benchmark's configurations). The strict
    "score > threshold" is the benchmark's; it differs from "score ≥ threshold" (the pixel
    metrics' convention, :func:`best_f1_threshold`) only on pixels exactly at the threshold.
    """

    def __init__(self, threshold: float, min_gt_size: int | None = None, min_pred_size: int | None = None,
                 ignore_index: int = IGNORE_INDEX, track: str | None = None):
        if track is not None and track not in TRACK_SIZES:
            raise ValueError(f"track must be one of {sorted(TRACK_SIZES)}, got {track!r}")
        preset = TRACK_SIZES.get(track, {"min_pred_size": 0, "min_gt_size": 10})
        self.threshold, self.track, self.ignore_index = threshold, track, ignore_index
        self.min_gt_size = preset["min_gt_size"] if min_gt_size is None else min_gt_size
        self.min_pred_size = preset["min_pred_size"] if min_pred_size is None else min_pred_size
        self.siou, self.siou_pred, self.ppv = [], [], []

    def components(self, scores, labels) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth and predicted component ids (0 = none) of the non-void pixels, flattened."""
        from scipy.ndimage import label as connected_components
        s = np.asarray(torch.as_tensor(scores).float().cpu()) if isinstance(scores, torch.Tensor) else np.asarray(scores)
        y = np.asarray(torch.as_tensor(labels).cpu()) if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if s.shape != y.shape or s.ndim != 2:
            raise ValueError(f"component metrics need one H×W score map and label map, got {s.shape} and {y.shape}")
        eight = np.ones((3, 3), np.uint8)
        void = y == self.ignore_index
        gt, n_gt = connected_components(y == 1, eight)
        pred, n_pred = connected_components((s > self.threshold) & ~void, eight)
        # predicted components are sized on the whole image, before small objects are voided
        pred_sizes = np.bincount(pred.ravel(), minlength=n_pred + 1)
        pred[(pred > 0) & (pred_sizes[pred] < self.min_pred_size)] = 0
        # the benchmark's loop also visits id 0, which would void the whole background of an
        # image with fewer than min_gt_size inlier pixels; only real components are voided here
        gt_sizes = np.bincount(gt.ravel(), minlength=n_gt + 1)
        roi = ~(void | ((gt > 0) & (gt_sizes[gt] < self.min_gt_size)))
        return gt[roi], pred[roi]

    def update(self, scores, labels) -> None:
        """Add one image: an H×W score map and its H×W label map (0 / 1 / ignore_index)."""
        gt, pred = self.components(scores, labels)
        for k in np.unique(gt[gt > 0]):
            self.siou.append(_adjusted_iou(gt, pred, k))
        for j in np.unique(pred[pred > 0]):
            self.siou_pred.append(_adjusted_iou(pred, gt, j))
            in_j = pred == j
            self.ppv.append(np.count_nonzero(in_j & (gt > 0)) / np.count_nonzero(in_j))

    def counts(self) -> dict:
        """TP, FN and FP at each τ of ``SIOU_THRESHOLDS``, summed over the images so far."""
        siou, ppv = np.array(self.siou), np.array(self.ppv)
        # the same float τ values as the benchmark's np.linspace, so a component exactly at a
        # τ whose float is not exact (0.6000000000000001) falls on the same side in both
        return {"tau": SIOU_THRESHOLDS,
                "TP": np.array([np.count_nonzero(siou >= t) for t in SIOU_THRESHOLDS]),
                "FN": np.array([np.count_nonzero(siou < t) for t in SIOU_THRESHOLDS]),
                "FP": np.array([np.count_nonzero(ppv < t) for t in SIOU_THRESHOLDS])}

    def compute(self) -> dict:
        """Mean F1 over τ, F1 at each τ, mean sIoU, mean PPV and the component counts."""
        c = self.counts()
        # F1(τ) = 2TP / (2TP + FN + FP), undefined (NaN) when there is nothing to count
        denominator = 2 * c["TP"] + c["FN"] + c["FP"]
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(denominator > 0, 2 * c["TP"] / denominator, np.nan)
        return {"sIoU_gt": _mean(self.siou), "sIoU_pred": _mean(self.siou_pred), "PPV": _mean(self.ppv),
                "mean_F1": float(np.mean(f1)), "F1": dict(zip(np.round(SIOU_THRESHOLDS, 2).tolist(), f1.tolist())),
                "components_gt": len(self.siou), "components_pred": len(self.ppv),
                "track": self.track, "min_gt_size": self.min_gt_size, "min_pred_size": self.min_pred_size}

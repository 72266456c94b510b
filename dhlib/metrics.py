"""Segmentation metrics: the confusion matrix and mean IoU over the classes present.

    IoU_k = TP_k / (TP_k + FP_k + FN_k),   mIoU = mean of IoU_k over classes with TP+FP+FN > 0

Ignore pixels (255) are excluded. The confusion matrix is additive over images, so it
accumulates over a whole dataset with constant memory.
"""
from __future__ import annotations

import numpy as np
import torch

from .data.labels import IGNORE_INDEX


def confusion_matrix(prediction, target, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``C[t, p]`` = number of pixels of true class t predicted as p (int64, K×K)."""
    prediction = torch.as_tensor(prediction).reshape(-1).long()
    target = torch.as_tensor(target).reshape(-1).long()
    if prediction.shape != target.shape:
        raise ValueError(f"prediction has {prediction.numel()} pixels but target {target.numel()}")
    keep = target != ignore_index
    t, p = target[keep], prediction[keep]
    if t.numel() and (t.min() < 0 or t.max() >= num_classes or p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"class ids must lie in [0, {num_classes}) outside ignored pixels")
    return torch.bincount(t * num_classes + p, minlength=num_classes ** 2) \
        .reshape(num_classes, num_classes).numpy()


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of each class from a confusion matrix; NaN for classes that never occur."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over the classes present in the target or the prediction."""
    return float(np.nanmean(iou_per_class(confusion)))


# ------------------------------------------------------------------------------------------
# Anomaly-detection metrics: AP, AUROC, FPR at 95 % TPR
# ------------------------------------------------------------------------------------------
#
# Label 1 (anomaly) is the positive class and a pixel is called anomalous when its score is
# at least the threshold t. Sweeping t over every distinct score from high to low gives one
# ROC / PR point per distinct score, tied scores entering together. Both the exact and the
# streaming metrics reduce the data to *groups of tied scores in descending order*, each
# with its number of positives and negatives, and read all three metrics off those groups
# in one pass (``_metrics_from_groups``):
#
#     TP_i = Σ_{j≤i} pos_j,  FP_i = Σ_{j≤i} neg_j,  P = TP_last,  N = FP_last
#     AP     = Σ_i (pos_i / P) · TP_i / (TP_i + FP_i)         the step sum Σ (R_n − R_{n−1}) P_n
#     AUROC  = Σ_i (FP_i − FP_{i−1})/N · (TP_i + TP_{i−1})/(2P)   trapezoids between ROC points
#     FPR95  = FP_i*/N at the first i* with TP_i* ≥ 0.95·P


def _metrics_from_groups(pos: np.ndarray, neg: np.ndarray) -> dict:
    tp = np.cumsum(pos, dtype=np.float64)
    fp = np.cumsum(neg, dtype=np.float64)
    P, N = tp[-1], fp[-1]
    has_pos = pos > 0
    ap = float(np.sum(pos[has_pos] / P * tp[has_pos] / (tp[has_pos] + fp[has_pos])))
    tp_prev = np.concatenate([[0.0], tp[:-1]])
    auroc = float(np.sum(neg / N * (tp + tp_prev) / (2 * P)))
    first = int(np.argmax(tp >= 0.95 * P))
    return {"AP": ap, "AUROC": auroc, "FPR95": float(fp[first] / N)}


def _as_flat_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.numpy()
    return np.asarray(x).reshape(-1)


def _scored_pixels(scores, labels, ignore_index):
    """Flatten, drop ignored pixels and check what a metric needs; returns (scores, is_anomaly)."""
    s, y = _as_flat_numpy(scores, "scores"), _as_flat_numpy(labels, "labels")
    if s.shape != y.shape:
        raise ValueError(f"scores hold {s.size} values but labels {y.size}; pass maps of the same shape")
    if s.dtype == np.float16:
        s = s.astype(np.float32)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    ignored = y == ignore_index
    if ignored.any():
        s, y = s[~ignored], y[~ignored]
    if not np.isfinite(s).all():
        bad = np.count_nonzero(~np.isfinite(s))
        raise ValueError(f"{bad} scored pixels are NaN or ±inf; anomaly scores must be finite")
    is_pos = y == 1
    other = ~is_pos & (y != 0)
    if other.any():
        raise ValueError(f"labels must be 0 (inlier), 1 (anomaly) or {ignore_index} (ignored); "
                         f"found {np.unique(y[other]).tolist()}")
    return s, is_pos


def ood_metrics(scores, labels, ignore_index: int = IGNORE_INDEX) -> dict:
    """Exact AP, AUROC and FPR95 of anomaly ``scores`` (higher = more anomalous) against
    ``labels`` (1 anomaly, 0 inlier, ``ignore_index`` not scored); torch or numpy, any shape.

    Equal to scikit-learn's ``average_precision_score``, ``roc_auc_score`` and the FPR of
    ``roc_curve`` at the first threshold with TPR ≥ 0.95, ties included, from one sort:
    the inlier scores are sorted (a vectorised sort, fast for float32) and the anomalies'
    distinct scores are located among them by binary search, which gives the tie groups.

    FPR95 convention: the FPR at the first threshold, going down from the highest score,
    with TPR ≥ 0.95, every distinct score being a threshold. DenseHybrid's released code
    (matejgrcic/DenseHybrid, experiments/semseg_negatives_joint_th.py, ``calculate_auroc``)
    takes instead the first point of ``roc_curve`` (default ``drop_intermediate=True``)
    with TPR > 0.95. The two agree unless some threshold gives TPR exactly 0.95, which
    needs 0.95·P to be a whole number (P, the anomaly pixels, a multiple of 20): then the
    strict rule moves on to the next anomaly score, adding the inliers scored in between
    to the false positives. That one-anomaly step shrinks like 1/P: invisible when pooled
    over a dataset's pixels, but large on single images with few anomaly pixels (at P = 20
    the strict rule asks for TPR = 1), and DenseHybrid averages per-image values.
    ``drop_intermediate`` adds to it only when consecutive groups of tied scores hold the
    same numbers of anomalies and inliers: it removes only points collinear with their
    neighbours, and along a run of anomaly scores alone the FPR does not change.
    """
    s, is_pos = _scored_pixels(scores, labels, ignore_index)
    pos_scores, neg_sorted = s[is_pos], np.sort(s[~is_pos])
    if pos_scores.size == 0 or neg_sorted.size == 0:
        raise ValueError(f"need both anomaly and inlier pixels; got {pos_scores.size} anomaly and "
                         f"{neg_sorted.size} inlier pixels (after removing label {ignore_index})")
    values, pos_counts = np.unique(pos_scores, return_counts=True)   # ascending distinct scores
    below = np.searchsorted(neg_sorted, values, side="left")          # #negatives < values[j]
    at_most = np.searchsorted(neg_sorted, values, side="right")       # #negatives ≤ values[j]
    m = values.size
    # Ascending groups: gap below values[0], values[0], gap, values[1], ..., values[m-1], gap above.
    pos = np.zeros(2 * m + 1, np.int64)
    neg = np.zeros(2 * m + 1, np.int64)
    pos[1::2] = pos_counts
    neg[1::2] = at_most - below                                       # negatives tied with values[j]
    neg[0::2] = np.concatenate([below, [neg_sorted.size]]) - np.concatenate([[0], at_most])  # gaps
    return _metrics_from_groups(pos[::-1], neg[::-1])


class StreamingOODMetrics:
    """AP, AUROC and FPR95 over any number of pixels in constant memory.

    Scores are binned by their float32 bit pattern: the IEEE-754 bits of a float, with the
    sign handled, form an integer that orders exactly like the float, and its top ``bits``
    bits select a bin. Every bin spans a fixed *relative* width, 2^-(bits-9) of its value
    (1.2e-4 with the default 22 bits), at any magnitude, so no score range is assumed: no
    clipping, no squashing, no per-batch rescaling -- DenseHybrid's scores are unbounded.
    To put the finest bins where the scores are, values are first shifted and scaled by a
    fixed monotone map ``(s − center)/scale``, taken from the first batch (its median and
    inter-quartile range) unless given. A bin acts as one group of tied scores, and the
    metrics are computed from the bins as in :func:`ood_metrics`.

    Memory: two int64 histograms of 2^bits bins (64 MiB at 22 bits), whatever the number of
    pixels. States add: ``merge`` (or summing ``state_dict()['pos']`` and ``['neg']`` across
    processes with the same center and scale) gives the metrics of the union.
    """

    def __init__(self, bits: int = 22, ignore_index: int = IGNORE_INDEX, center: float | None = None,
                 scale: float | None = None):
        if not 10 <= bits <= 24:
            raise ValueError("bits must be between 10 and 24")
        self.bits, self.ignore_index = bits, ignore_index
        self.center, self.scale = center, scale
        self._pos = np.zeros(2 ** bits, np.int64)
        self._neg = np.zeros(2 ** bits, np.int64)
        # Bin indices wait here and are counted in one bincount per few million pixels: a
        # bincount of 2^bits bins per image would spend its time zeroing and adding histograms.
        self._pending = {True: [], False: []}
        self._pending_size = 0

    @property
    def pos(self) -> np.ndarray:
        """Anomaly pixels per bin."""
        self._flush()
        return self._pos

    @pos.setter
    def pos(self, counts) -> None:  # e.g. histograms summed over processes
        self._flush()
        self._pos = np.asarray(counts, np.int64)

    @property
    def neg(self) -> np.ndarray:
        """Inlier pixels per bin."""
        self._flush()
        return self._neg

    @neg.setter
    def neg(self, counts) -> None:
        self._flush()
        self._neg = np.asarray(counts, np.int64)

    def _flush(self) -> None:
        for is_pos, hist in ((True, self._pos), (False, self._neg)):
            if self._pending[is_pos]:
                hist += np.bincount(np.concatenate(self._pending[is_pos]), minlength=hist.size)
        self._pending, self._pending_size = {True: [], False: []}, 0

    def _bins(self, s: np.ndarray) -> np.ndarray:
        if self.center is None:
            q1, median, q3 = np.quantile(s, [0.25, 0.5, 0.75]) if s.size else (0.0, 0.0, 1.0)
            self.center, self.scale = float(median), float(q3 - q1) or 1.0
        u = ((s.astype(np.float64) - self.center) / (self.scale or 1.0)).astype(np.float32).view(np.uint32)
        # negative floats: flip all bits; positive floats: set the sign bit -> monotone uint32
        key = np.where(u >> 31, ~u, u | np.uint32(0x80000000))
        return (key >> np.uint32(32 - self.bits)).astype(np.int64)

    def update(self, scores, labels) -> None:
        s, is_pos = _scored_pixels(scores, labels, self.ignore_index)
        bins = self._bins(s)
        self._pending[True].append(bins[is_pos])
        self._pending[False].append(bins[~is_pos])
        self._pending_size += bins.size
        if self._pending_size >= 2 ** 22:
            self._flush()

    def merge(self, other: "StreamingOODMetrics") -> "StreamingOODMetrics":
        if other.bits != self.bits or (other.center, other.scale) != (self.center, self.scale):
            raise ValueError("can only merge streaming metrics with the same bits, center and scale "
                             "(pass center= and scale= to every process)")
        self._flush()
        self._pos += other.pos
        self._neg += other.neg
        return self

    def state_dict(self) -> dict:
        return {"bits": self.bits, "center": self.center, "scale": self.scale,
                "pos": torch.from_numpy(self.pos), "neg": torch.from_numpy(self.neg)}

    def compute(self) -> dict:
        P, N = int(self.pos.sum()), int(self.neg.sum())
        if P == 0 or N == 0:
            raise ValueError(f"need both anomaly and inlier pixels; got {P} anomaly and {N} inlier pixels")
        used = (self.pos + self.neg) > 0
        return _metrics_from_groups(self.pos[used][::-1], self.neg[used][::-1])


# ------------------------------------------------------------------------------------------
# Open-set segmentation (TPAMI 2024): the cost of anomalies for the closed-set classes
# ------------------------------------------------------------------------------------------

def threshold_at_tpr(scores, labels, tpr: float = 0.95, ignore_index: int = IGNORE_INDEX) -> float:
    """The largest threshold τ with TPR(score ≥ τ) ≥ ``tpr``: the ⌈tpr·P⌉-th largest anomaly
    score. Chosen on a calibration split, then applied to the test split."""
    s, is_pos = _scored_pixels(scores, labels, ignore_index)
    pos = np.sort(s[is_pos])[::-1]
    if pos.size == 0:
        raise ValueError("the calibration split holds no anomaly pixels")
    return float(pos[int(np.ceil(tpr * pos.size)) - 1])


class OpenSetConfusion:
    """Closed-set and open-set confusion matrices over a dataset.

    Open-set prediction: the argmax class, or "unknown" (index K) where the anomaly score is
    ≥ τ. Open-set truth: the class for inliers, "unknown" for anomalies. From the
    (K+1)×(K+1) matrix, per known class k,

        open-IoU_k = TP_k / (TP_k + FP_k + FN_k)

    where anomalies predicted as k count in FP_k and inliers rejected as unknown in FN_k;
    open-mIoU averages over the known classes present. Closed mIoU uses only the inliers and
    the argmax. The gap between the two is what the anomalies cost.
    """

    def __init__(self, num_classes: int, threshold: float):
        self.k, self.threshold = num_classes, threshold
        self.closed = np.zeros((num_classes, num_classes), np.int64)
        self.open = np.zeros((num_classes + 1, num_classes + 1), np.int64)

    def update(self, prediction, scores, target, ood_label) -> None:
        """``prediction``: argmax classes; ``target``: train ids (255 ignore); ``ood_label``: 0/1/255."""
        prediction = torch.as_tensor(prediction).reshape(-1).long()
        scores = torch.as_tensor(scores).reshape(-1)
        target = torch.as_tensor(target).reshape(-1).long()
        ood = torch.as_tensor(ood_label).reshape(-1).long()
        inlier = (ood == 0) & (target != IGNORE_INDEX)
        self.closed += confusion_matrix(prediction[inlier], target[inlier], self.k)
        truth = torch.where(ood == 1, self.k, target)
        scored = inlier | (ood == 1)
        open_pred = torch.where(scores >= self.threshold, self.k, prediction)
        self.open += confusion_matrix(open_pred[scored], truth[scored], self.k + 1)

    def compute(self) -> dict:
        open_iou = iou_per_class(self.open)[:self.k]
        return {"mIoU": mean_iou(self.closed), "open_mIoU": float(np.nanmean(open_iou)),
                "IoU": iou_per_class(self.closed).tolist(), "open_IoU": open_iou.tolist()}


def curves_from_streaming(metrics: StreamingOODMetrics, points: int = 512) -> dict:
    """ROC (fpr, tpr) and precision-recall curves from a streaming state, thinned to about
    ``points`` points for plotting."""
    used = (metrics.pos + metrics.neg) > 0
    tp = np.cumsum(metrics.pos[used][::-1], dtype=np.float64)
    fp = np.cumsum(metrics.neg[used][::-1], dtype=np.float64)
    keep = np.unique(np.linspace(0, tp.size - 1, min(points, tp.size)).astype(int))
    tp, fp = tp[keep], fp[keep]
    return {"fpr": np.concatenate([[0], fp / fp[-1]]), "tpr": np.concatenate([[0], tp / tp[-1]]),
            "recall": tp / tp[-1], "precision": tp / np.maximum(tp + fp, 1)}


def best_f1_threshold(metrics: StreamingOODMetrics) -> float:
    """The score threshold t maximising pixel F1 = 2PR/(P+R) of "score ≥ t", from a
    streaming state (the lowest score of the best bin)."""
    used = np.flatnonzero((metrics.pos + metrics.neg) > 0)[::-1]          # descending bins
    tp = np.cumsum(metrics.pos[used], dtype=np.float64)
    fp = np.cumsum(metrics.neg[used], dtype=np.float64)
    f1 = 2 * tp / (tp + fp + tp[-1])                                      # 2TP / (2TP + FP + FN)
    best = used[int(np.argmax(f1))]
    key = np.array([best << (32 - metrics.bits)], np.uint32)               # the bin's lowest key
    bits = np.where(key >> 31, key & np.uint32(0x7FFFFFFF), ~key)         # undo the monotone map
    value = float(bits.view(np.float32)[0])
    return value * (metrics.scale or 1.0) + (metrics.center or 0.0)

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

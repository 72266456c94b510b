"""Label conventions: Cityscapes label ids -> train ids, class names and colours.

Cityscapes stores *label ids* (0-33) on disk in ``*_gtFine_labelIds.png``; models are
trained on 19 *train ids* (0-18) and every other id becomes 255 ("ignore"). The table
comes from the official ``cityscapesscripts`` package, so it is the benchmark's own.
"""
from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CITYSCAPES_LABELS

IGNORE_INDEX = 255

# The 19 evaluated classes, indexed by train id.
TRAIN_CLASSES = [lab for lab in sorted(_CITYSCAPES_LABELS, key=lambda l: l.trainId)
                 if 0 <= lab.trainId < IGNORE_INDEX]
CLASS_NAMES = [lab.name for lab in TRAIN_CLASSES]
NUM_CLASSES = len(CLASS_NAMES)  # 19
CLASS_COLORS = np.array([lab.color for lab in TRAIN_CLASSES], dtype=np.uint8)

# Label ids as named in cityscapesscripts (used by SynthCity to write real-format labels).
LABEL_ID = {lab.name: lab.id for lab in _CITYSCAPES_LABELS if lab.id >= 0}
VALID_LABEL_IDS = frozenset(LABEL_ID.values())  # 0..33


def _label_to_train_lut() -> np.ndarray:
    """A 256-entry table: ``lut[label_id] = train_id`` (255 for ignored or undefined ids)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for lab in _CITYSCAPES_LABELS:
        if lab.id >= 0 and 0 <= lab.trainId < IGNORE_INDEX:
            lut[lab.id] = lab.trainId
    return lut


LABEL_TO_TRAIN = _label_to_train_lut()


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes label-id map to train ids (255 = ignore) by table look-up."""
    return LABEL_TO_TRAIN[label_ids]


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """H×W train ids -> H×W×3 uint8 Cityscapes colours; ignore pixels are black."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:NUM_CLASSES] = CLASS_COLORS
    return palette[np.asarray(train_ids, dtype=np.int64).clip(0, 255)]


# Fishyscapes OOD labels
OOD_INLIER, OOD_ANOMALY, OOD_VOID = 0, 1, 255

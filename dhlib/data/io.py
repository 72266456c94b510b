"""Reading images and label maps, with errors that tell the user what to do.

Every loader in :mod:`dhlib.data` goes through these few functions, so a corrupt file,
a label value outside the dataset's set, or a missing dataset folder always produce the
same kind of message: what was wrong, which file, and how to fix it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder is missing or incomplete. The message shows the expected tree."""


class CorruptFileError(RuntimeError):
    """An image or label file exists but cannot be decoded."""


class LabelValueError(ValueError):
    """A label map holds values outside the dataset's label set."""


def require_tree(root: Path, required: list[str], expected_tree: str, where_to_get: str) -> Path:
    """Check that ``root`` and the sub-folders ``required`` exist, else explain the layout."""
    root = Path(root)
    missing = [r for r in required if not (root / r).is_dir()]
    if not root.is_dir() or missing:
        what = f"folder {root} does not exist" if not root.is_dir() else \
            f"{root} lacks {', '.join(missing)}"
        raise DatasetNotFoundError(
            f"Dataset not found: {what}.\n\nExpected layout:\n{expected_tree}\n{where_to_get}")
    return root


def _decode(path: Path, kind: str) -> np.ndarray:
    """Decode an image file with Pillow; a missing or undecodable file names itself."""
    try:
        with Image.open(path) as im:
            if kind == "image":
                im = im.convert("RGB")
            return np.array(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"{kind} file {path} is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptFileError(f"cannot decode {kind} {path}: {err}. The file is corrupt or not an "
                               "image; re-download or re-export it.") from None


def read_image(path: str | Path) -> torch.Tensor:
    """Decode a PNG/JPEG file to a ``3×H×W`` uint8 RGB tensor (grey images are expanded)."""
    return torch.from_numpy(_decode(Path(path), "image")).permute(2, 0, 1).contiguous()


def read_label(path: str | Path, allowed_values, dataset: str) -> np.ndarray:
    """Decode a single-channel label PNG to an ``H×W`` uint8 array and check its values.

    ``allowed_values`` is a set of ints; anything else raises :class:`LabelValueError`
    naming the file and the offending values (a wrong file, e.g. a colour or instance
    label map, is the usual cause).
    """
    path = Path(path)
    label = _decode(path, "label")
    if label.ndim != 2:
        raise LabelValueError(f"label {path} has {label.shape[-1]} channels; {dataset} labels are "
                              "single-channel PNGs of class ids (did you pick a colour map?)")
    if label.dtype != np.uint8:
        if label.min() < 0 or label.max() > 255:
            raise LabelValueError(f"label {path} holds values outside 0..255 ({label.dtype})")
        label = label.astype(np.uint8)
    present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    bad = sorted(set(present.tolist()) - set(allowed_values))
    if bad:
        raise LabelValueError(f"label {path} holds values {bad} that are not {dataset} labels "
                              f"(allowed: {_describe(allowed_values)})")
    return label


def read_mapped_label(path: str | Path, values: dict[int, int], dataset: str) -> np.ndarray:
    """Read a label map and translate its on-disk values with ``values`` (file value -> new value).

    Benchmarks store the same three meanings with different numbers (Road Anomaly marks
    anomalies with 2, some Lost & Found packagings mark void with 2), so every format states
    its own table; a value outside it raises :class:`LabelValueError` like :func:`read_label`.
    """
    label = read_label(path, values.keys(), dataset)
    table = np.arange(256, dtype=np.uint8)  # identity outside ``values``: read_label rejected those
    for on_disk, meaning in values.items():
        table[on_disk] = meaning
    return table[label]


def check_same_size(image: torch.Tensor, label: np.ndarray | torch.Tensor, image_path, label_path):
    """Raise if an image and its label map differ in height/width."""
    if tuple(image.shape[-2:]) != tuple(label.shape[-2:]):
        raise ValueError(f"image {image_path} is {tuple(image.shape[-2:])} (H, W) but its label "
                         f"{label_path} is {tuple(label.shape[-2:])}; they must match pixel for pixel")


class DecodedCache:
    """Decoded samples kept in memory, up to ``budget_bytes`` (0: none kept).

    A training run reads each scene once per epoch; on a CPU every decode is time taken from
    the training step, so a dataset small enough keeps what it decoded. Samples past the budget
    are decoded again on every read. Each DataLoader worker process keeps its own.
    """

    def __init__(self, budget_bytes: int = 0):
        self.budget, self.used, self.items = budget_bytes, 0, {}

    def get(self, key, decode):
        """The cached sample ``key``, or ``decode()``, kept if it fits. Callers must not modify it."""
        if key in self.items:
            return self.items[key]
        sample = decode()
        size = sum(part.nbytes for part in sample)
        if self.used + size <= self.budget:
            self.items[key], self.used = sample, self.used + size
        return sample


def _describe(values) -> str:
    values = sorted(values)
    if len(values) > 6 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    if len(values) > 6 and values[:-1] == list(range(values[0], values[-2] + 1)):
        return f"{values[0]}..{values[-2]} and {values[-1]}"
    return str(values)

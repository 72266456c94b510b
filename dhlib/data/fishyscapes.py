"""Anomaly test sets in the Fishyscapes label format: 0 inlier, 1 anomaly, 255 void.

One folder class serves every such set:

* Fishyscapes Static and Fishyscapes Lost & Found validation (``Fishyscapes``);
* a folder of the user's own images, with or without labels (``CustomImages``);
* SynthCity's Fishyscapes-Static-format test tree (written by ``make-data``).

Images and labels are paired by name: ``X.png``/``X.jpg`` (or ``X_rgb.png``,
``X_leftImg8bit.png``) with ``X.png`` (or ``X_labels.png``) in the labels folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from .io import check_same_size, read_image, read_label, require_tree
from .labels import OOD_ANOMALY, OOD_INLIER, OOD_VOID, VALID_LABEL_IDS
from .transforms import eval_transforms

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
OOD_VALUES = frozenset({OOD_INLIER, OOD_ANOMALY, OOD_VOID})

EXPECTED_TREE = """\
  <root>/                                   e.g. data/fishyscapes
    Static/original/<name>.png              RGB images
    Static/labels/<name>.png                0 inlier, 1 anomaly, 255 void
    LostAndFound/original/<name>.png
    LostAndFound/labels/<name>.png"""
WHERE = ("Fishyscapes validation sets: https://fishyscapes.com/dataset (Static is built on "
         "Cityscapes val, Lost & Found on the Lost and Found dataset); export images and 0/1/255 "
         "labels into the folders above. Or run `python -m dhlib make-data` for SynthCity's "
         "Fishyscapes-Static-format test tree.")

CUSTOM_TREE = """\
  <root>/                                   e.g. data/custom_fs_static
    images/<name>.png|.jpg                  your RGB images
    labels/<name>.png                       optional: 0 inlier, 1 anomaly, 255 void"""


def _key(path: Path) -> str:
    """The shared name of an image and its label: the stem without a known suffix."""
    stem = path.stem
    for suffix in ("_rgb", "_leftImg8bit", "_labels", "_gtFine_labelIds"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _index(folder: Path, suffixes) -> dict[str, Path]:
    files = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in suffixes:
            files.setdefault(_key(p), p)
    return files


class OODFolder(torch.utils.data.Dataset):
    """``(image, ood_label)`` pairs from an image folder and an optional label folder.

    Images are float ``3×H×W`` in [0, 1]; labels int64 ``H×W`` in {0, 1, 255}. Without a
    label folder every pixel is 255 ("not scored") and ``has_labels`` is False.
    With ``semantic_dir`` (SynthCity writes one) ``semantic_target(i)`` gives the scene's
    Cityscapes train ids, used by open-set mIoU.
    """

    def __init__(self, image_dir: Path, label_dir: Path | None, transforms=None, semantic_dir=None):
        self.images = _index(image_dir, IMAGE_SUFFIXES)
        if not self.images:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
        self.keys = sorted(self.images)
        self.labels = None
        if label_dir is not None:
            labels = _index(label_dir, (".png",))
            missing = [k for k in self.keys if k not in labels]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} image(s) in {image_dir} have no label in {label_dir}, e.g. "
                    f"{missing[:3]}; a label must be named like its image (<name>.png)")
            self.labels = labels
        self.semantic_dir = semantic_dir
        self.transforms = transforms or eval_transforms()

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, index):
        key = self.keys[index]
        image = read_image(self.images[key])
        if self.labels is not None:
            label = read_label(self.labels[key], OOD_VALUES, "Fishyscapes (0/1/255)")
            check_same_size(image, label, self.images[key], self.labels[key])
        else:
            label = np.full(image.shape[-2:], OOD_VOID, np.uint8)
        return self.transforms(tv_tensors.Image(image), tv_tensors.Mask(torch.from_numpy(label).long()))

    def name(self, index) -> str:
        return self.keys[index]

    def semantic_target(self, index) -> torch.Tensor:
        """Cityscapes train ids of the scene under the anomalies (SynthCity only)."""
        from .labels import LABEL_TO_TRAIN
        if self.semantic_dir is None:
            raise FileNotFoundError("this dataset has no semantic/ folder of Cityscapes label ids")
        path = self.semantic_dir / f"{self.keys[index]}_gtFine_labelIds.png"
        return torch.from_numpy(LABEL_TO_TRAIN[read_label(path, VALID_LABEL_IDS, "Cityscapes label-id")]).long()


class Fishyscapes(OODFolder):
    """Fishyscapes ``Static`` or ``LostAndFound`` validation: ``root/<split>/{original,labels}``."""

    def __init__(self, root, split: str = "Static", transforms=None):
        if split not in ("Static", "LostAndFound"):
            raise ValueError(f"split must be 'Static' or 'LostAndFound', got {split!r}")
        root = require_tree(Path(root), [f"{split}/original", f"{split}/labels"], EXPECTED_TREE, WHERE)
        semantic = root / split / "semantic"
        super().__init__(root / split / "original", root / split / "labels", transforms,
                         semantic if semantic.is_dir() else None)


class CustomImages(OODFolder):
    """The user's own images in ``root/images`` with optional ``root/labels`` (0/1/255)."""

    def __init__(self, root, transforms=None):
        root = require_tree(Path(root), ["images"], CUSTOM_TREE,
                            "Put your photos in images/; labels are optional.")
        labels = root / "labels"
        super().__init__(root / "images", labels if labels.is_dir() else None, transforms)

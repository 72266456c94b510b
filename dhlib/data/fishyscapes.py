"""Anomaly test sets in the Fishyscapes label format: 0 inlier, 1 anomaly, 255 void.

One folder class serves every such set:

* Fishyscapes Static and Fishyscapes Lost & Found validation (``Fishyscapes``);
* a folder of the user's own images, with or without labels (``CustomImages``);
* SynthCity's Fishyscapes-Static-format test tree (written by ``make-data``).

Images and labels are paired by name: ``X.png``/``X.jpg`` (or ``X_rgb.png``,
``X_leftImg8bit.png``) with ``X.png`` (or ``X_labels.png``) in the labels folder.

Label values on disk: Static uses 0 inlier, 1 anomaly, 255 void; Lost & Found also comes
with void stored as 2 (see ``LOST_AND_FOUND_LABELS``). The other benchmarks (SegmentMeIfYouCan,
Road Anomaly, and the DenseHybrid packagings of Fishyscapes) are read by
:func:`dhlib.data.load_anomaly_dataset`, which builds on :class:`LabelledImages` below.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from .io import check_same_size, read_image, read_label, read_mapped_label, require_tree
from .labels import OOD_ANOMALY, OOD_INLIER, OOD_VOID, VALID_LABEL_IDS
from .transforms import eval_transforms

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
OOD_VALUES = frozenset({OOD_INLIER, OOD_ANOMALY, OOD_VOID})

# On-disk label value -> 0 inlier / 1 anomaly / 255 void.
# Fishyscapes Static: the benchmark's own scoring (hermannsblum/bdl-benchmark,
# bdlb/fishyscapes/benchmark.py) counts label 1 as anomaly and leaves every label above 1
# unscored; DenseHybrid's loader (matejgrcic/DenseHybrid, data/loaders/fs_static.py) finds void
# stored as 255 in the files and renames it to its own ignore id.
STATIC_LABELS = {0: OOD_INLIER, 1: OOD_ANOMALY, 255: OOD_VOID}
STATIC_FORMAT = "Fishyscapes (0/1/255)"
# Fishyscapes Lost & Found: scored by the same bdl-benchmark code (above 1 = void), and void is
# stored as 255 or as 2 depending on the packaging: DenseHybrid's uses 2
# (matejgrcic/DenseHybrid data/datasets/fs_lost_found/lost_and_found.py: ignore_class = 2;
# evaluate_ood.py: ignore_id=2), and the Fishyscapes class tables of robin-chan/meta-ood
# src/dataset/fishyscapes.py and tianyu0207/PEBAL code/dataset/data_loader.py give 'unlabeled'
# the id 2 (train id 255).
LOST_AND_FOUND_LABELS = {0: OOD_INLIER, 1: OOD_ANOMALY, 2: OOD_VOID, 255: OOD_VOID}
LOST_AND_FOUND_FORMAT = "Fishyscapes Lost & Found (0 inlier, 1 anomaly, 2 or 255 void)"

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


class LabelledImages(torch.utils.data.Dataset):
    """``(image, ood_label)`` pairs from tables ``name -> image file`` and ``name -> label file``.

    Images are float ``3×H×W`` in [0, 1]; labels int64 ``H×W`` in {0, 1, 255}, translated from
    the file's values by ``label_values`` (on-disk value -> 0/1/255; any other value is an error
    naming the file). Without labels every pixel is 255 ("not scored") and ``has_labels`` is False.
    With ``semantic_dir`` (SynthCity writes one) ``semantic_target(i)`` gives the scene's
    Cityscapes train ids, used by open-set mIoU.
    """

    def __init__(self, images: dict[str, Path], labels: dict[str, Path] | None, transforms=None,
                 semantic_dir=None, label_values=None, label_format: str = STATIC_FORMAT):
        self.images, self.labels = images, labels
        self.keys = sorted(images)
        self.label_values = dict(label_values or STATIC_LABELS)
        self.label_format = label_format
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
            label = read_mapped_label(self.labels[key], self.label_values, self.label_format)
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


class OODFolder(LabelledImages):
    """:class:`LabelledImages` from an image folder and an optional label folder, paired by name."""

    def __init__(self, image_dir: Path, label_dir: Path | None, transforms=None, semantic_dir=None,
                 label_values=None, label_format: str = STATIC_FORMAT):
        images = _index(image_dir, IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
        labels = None
        if label_dir is not None:
            labels = _index(label_dir, (".png",))
            missing = [k for k in sorted(images) if k not in labels]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} image(s) in {image_dir} have no label in {label_dir}, e.g. "
                    f"{missing[:3]}; a label must be named like its image (<name>.png)")
        super().__init__(images, labels, transforms, semantic_dir, label_values, label_format)


class Fishyscapes(OODFolder):
    """Fishyscapes ``Static`` or ``LostAndFound`` validation: ``root/<split>/{original,labels}``."""

    def __init__(self, root, split: str = "Static", transforms=None):
        if split not in ("Static", "LostAndFound"):
            raise ValueError(f"split must be 'Static' or 'LostAndFound', got {split!r}")
        root = require_tree(Path(root), [f"{split}/original", f"{split}/labels"], EXPECTED_TREE, WHERE)
        semantic = root / split / "semantic"
        values, fmt = ((STATIC_LABELS, STATIC_FORMAT) if split == "Static"
                       else (LOST_AND_FOUND_LABELS, LOST_AND_FOUND_FORMAT))
        super().__init__(root / split / "original", root / split / "labels", transforms,
                         semantic if semantic.is_dir() else None, values, fmt)


class CustomImages(OODFolder):
    """The user's own images in ``root/images`` with optional ``root/labels`` (0/1/255)."""

    def __init__(self, root, transforms=None):
        root = require_tree(Path(root), ["images"], CUSTOM_TREE,
                            "Put your photos in images/; labels are optional.")
        labels = root / "labels"
        super().__init__(root / "images", labels if labels.is_dir() else None, transforms)

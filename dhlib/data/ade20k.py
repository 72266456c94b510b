"""ADE20K (SceneParsing, ``ADEChallengeData2016``) as the source of real negatives.

DenseHybrid pastes pieces of ADE20K images into Cityscapes scenes as negative data.
Each item is ``(image, classes)`` with ``classes`` the 150-class map (0 = unlabeled), from
which :mod:`dhlib.negatives` cuts the union of one or two class masks.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torchvision import tv_tensors

from .io import DecodedCache, check_same_size, read_image, read_label, require_tree
from .transforms import eval_transforms

EXPECTED_TREE = """\
  <root>/                                   e.g. data/ade20k/ADEChallengeData2016
    images/training/ADE_train_XXXXXXXX.jpg
    annotations/training/ADE_train_XXXXXXXX.png   class ids 1-150, 0 = unlabeled"""
WHERE = ("Get ADEChallengeData2016.zip (MIT Scene Parsing benchmark, "
         "http://sceneparsing.csail.mit.edu/) and unzip it under data/ade20k/; or run "
         "`python -m dhlib make-data` for the SynthCity stand-in.")
ADE_CLASS_IDS = frozenset(range(151))


class ADE20KNegatives(torch.utils.data.Dataset):
    """Images as float ``3×H×W`` in [0, 1], class maps as int64 ``H×W`` (0-150)."""

    def __init__(self, root, split: str = "training", transforms=None, cache_bytes: int = 0):
        if split not in ("training", "validation"):
            raise ValueError(f"split must be 'training' or 'validation', got {split!r}")
        root = require_tree(Path(root), [f"images/{split}", f"annotations/{split}"], EXPECTED_TREE, WHERE)
        self.images = sorted(p for p in (root / "images" / split).iterdir()
                             if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not self.images:
            raise FileNotFoundError(f"no .jpg images in {root / 'images' / split}")
        self.labels = [root / "annotations" / split / f"{p.stem}.png" for p in self.images]
        self.transforms = transforms or eval_transforms()
        self.cache = DecodedCache(cache_bytes)  # ``cache_bytes``: decoded images kept in memory

    def __len__(self):
        return len(self.images)

    def decoded(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        """Image ``index`` as read from disk: uint8 ``3×H×W`` image, uint8 ``H×W`` class map."""
        image = read_image(self.images[index])
        classes = read_label(self.labels[index], ADE_CLASS_IDS, "ADE20K class-id")
        check_same_size(image, classes, self.images[index], self.labels[index])
        return image, torch.from_numpy(classes)

    def __getitem__(self, index):
        image, classes = self.cache.get(index, lambda: self.decoded(index))
        return self.transforms(tv_tensors.Image(image), tv_tensors.Mask(classes.long()))

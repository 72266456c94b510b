"""Cityscapes (fine annotations) as ``(image, train-id target)`` pairs.

Built on ``torchvision.datasets.Cityscapes`` for the file listing; labels are read from
``*_gtFine_labelIds.png`` and mapped to the 19 train ids with cityscapesscripts' table.
SynthCity writes the same tree, so the quick tier runs exactly this code.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torchvision import tv_tensors

from .io import DecodedCache, check_same_size, read_image, read_label, require_tree
from .labels import LABEL_TO_TRAIN, VALID_LABEL_IDS
from .transforms import eval_transforms

EXPECTED_TREE = """\
  <root>/                                   e.g. data/cityscapes
    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png"""
WHERE = ("Get leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
         "https://www.cityscapes-dataset.com/downloads/ (free registration) and unzip both "
         "into the root; or run `python -m dhlib make-data` for the SynthCity stand-in.")


class CityscapesSegmentation(torch.utils.data.Dataset):
    """Images as float ``3×H×W`` in [0, 1], targets as int64 ``H×W`` train ids (255 = ignore)."""

    def __init__(self, root, split: str = "train", transforms=None, cache_bytes: int = 0):
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        self.root = require_tree(Path(root), [f"leftImg8bit/{split}", f"gtFine/{split}"],
                                 EXPECTED_TREE, WHERE)
        self.listing = torchvision.datasets.Cityscapes(str(self.root), split=split, mode="fine",
                                                       target_type="semantic")
        if len(self.listing) == 0:
            raise FileNotFoundError(f"no *_leftImg8bit.png images under {self.root}/leftImg8bit/{split}")
        self.transforms = transforms or eval_transforms()
        self.cache = DecodedCache(cache_bytes)  # ``cache_bytes``: decoded scenes kept in memory

    def __len__(self):
        return len(self.listing)

    def decoded(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        """Scene ``index`` as read from disk: uint8 ``3×H×W`` image, uint8 ``H×W`` train ids."""
        image_path, label_path = self.listing.images[index], self.listing.targets[index][0]
        image = read_image(image_path)
        label_ids = read_label(label_path, VALID_LABEL_IDS, "Cityscapes label-id")
        check_same_size(image, label_ids, image_path, label_path)
        return image, torch.from_numpy(LABEL_TO_TRAIN[label_ids])

    def __getitem__(self, index):
        image, train_ids = self.cache.get(index, lambda: self.decoded(index))
        # .long() copies, and the transforms return new images: the cached tensors stay as read
        return self.transforms(tv_tensors.Image(image), tv_tensors.Mask(train_ids.long()))

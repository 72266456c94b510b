"""Joint image + label transforms built on ``torchvision.transforms.v2``.

Images travel as ``tv_tensors.Image`` and labels as ``tv_tensors.Mask``, so one v2 pipeline
transforms both consistently: geometry is shared, images are resized bilinearly and
masks with nearest neighbour, and padding fills masks with the ignore index 255.

The training augmentation of DenseHybrid (and of the NVIDIA Cityscapes recipe it starts
from) is: random scale in [0.5, 2], random crop with ignore padding, horizontal flip.
"""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .labels import IGNORE_INDEX


class RandomScale(v2.Transform):
    """Resize image and mask together by a factor s ~ U(low, high)."""

    def __init__(self, low: float = 0.5, high: float = 2.0):
        super().__init__()
        if not 0 < low <= high:
            raise ValueError(f"scale range must satisfy 0 < low <= high, got ({low}, {high})")
        self.low, self.high = low, high

    def make_params(self, flat_inputs):
        height, width = v2.query_size(flat_inputs)
        s = float(torch.empty(1).uniform_(self.low, self.high))
        return {"size": [max(1, round(height * s)), max(1, round(width * s))]}

    def transform(self, inpt, params):
        if isinstance(inpt, tv_tensors.Mask):
            return TF.resize(inpt, params["size"], interpolation=v2.InterpolationMode.NEAREST_EXACT)
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Video)):
            return TF.resize(inpt, params["size"], antialias=True)
        return inpt


def to_float_image():
    """uint8 image in [0, 255] -> float32 in [0, 1]; masks are left as they are."""
    return v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)


def train_transforms(crop_size: int, scale_range=(0.5, 2.0), flip: bool = True) -> v2.Compose:
    """Random scale, crop to ``crop_size`` (padding images with 0, masks with 255), flip."""
    steps = [
        RandomScale(*scale_range),
        v2.RandomCrop(crop_size, pad_if_needed=True,
                      fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
    ]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(to_float_image())
    return v2.Compose(steps)


def eval_transforms() -> v2.Compose:
    """Evaluation sees full images: only the conversion to float."""
    return v2.Compose([to_float_image()])

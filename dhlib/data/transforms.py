"""Joint image + label transforms built on ``torchvision.transforms.v2``.

Images travel as ``tv_tensors.Image`` and labels as ``tv_tensors.Mask``, so one v2 pipeline
transforms both consistently: geometry is shared, images are resized bilinearly and
masks with nearest neighbour, and padding fills masks with the ignore index 255.

The training augmentation of DenseHybrid (and of the NVIDIA Cityscapes recipe it starts
from) is: random scale in [0.5, 2], random crop with ignore padding, horizontal flip.
The crop can be *class-uniform* (NVIDIA's ``class_uniform_pct``): with probability p it is
centred on a pixel of a class drawn uniformly from the classes present, so that thin, rare
classes (poles, lights, signs) are seen as often as road and sky.
"""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .labels import IGNORE_INDEX


def crop_hw(crop_size) -> tuple[int, int]:
    """``(height, width)`` of a crop given as one side or as a pair.

    >>> crop_hw(192), crop_hw((256, 512))
    ((192, 192), (256, 512))
    """
    if isinstance(crop_size, int):
        return crop_size, crop_size
    height, width = crop_size
    return height, width


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


class ClassUniformCrop(v2.Transform):
    """Crop ``size`` (a side, or ``(height, width)``); with probability ``class_prob`` centre
    the crop on a rare-class pixel.

    Class-uniform sampling: draw a class c uniformly from the train ids present in the mask,
    a pixel uniformly from the pixels of c, and centre the crop on it (clamped to the image).
    Otherwise the crop position is uniform. Images smaller than the crop are padded at the
    bottom/right with 0 (masks with 255), as ``v2.RandomCrop(pad_if_needed=True)`` does.
    """

    def __init__(self, size, class_prob: float = 0.0):
        super().__init__()
        if not 0 <= class_prob <= 1:
            raise ValueError(f"class_prob must be a probability in [0, 1], got {class_prob}")
        self.crop_h, self.crop_w = crop_hw(size)
        self.class_prob = class_prob

    def make_params(self, flat_inputs):
        height, width = v2.query_size(flat_inputs)
        pad_bottom, pad_right = max(0, self.crop_h - height), max(0, self.crop_w - width)
        max_top, max_left = height + pad_bottom - self.crop_h, width + pad_right - self.crop_w
        top = int(torch.randint(max_top + 1, ()))
        left = int(torch.randint(max_left + 1, ()))
        if self.class_prob > 0 and float(torch.rand(())) < self.class_prob:
            masks = [x for x in flat_inputs if isinstance(x, tv_tensors.Mask)]
            if masks:
                mask = masks[0].reshape(-1)
                classes = torch.unique(mask[mask != IGNORE_INDEX])
                if len(classes):
                    c = classes[torch.randint(len(classes), ())]
                    pixels = torch.nonzero(mask == c).squeeze(1)
                    pixel = int(pixels[torch.randint(len(pixels), ())])
                    y, x = divmod(pixel, width)
                    top = min(max(0, y - self.crop_h // 2), max_top)
                    left = min(max(0, x - self.crop_w // 2), max_left)
        return {"padding": [0, 0, pad_right, pad_bottom], "top": top, "left": left}

    def transform(self, inpt, params):
        if not isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return inpt
        fill = IGNORE_INDEX if isinstance(inpt, tv_tensors.Mask) else 0
        if any(params["padding"]):
            inpt = TF.pad(inpt, params["padding"], fill=fill)
        return TF.crop(inpt, params["top"], params["left"], self.crop_h, self.crop_w)


def to_float_image():
    """uint8 image in [0, 255] -> float32 in [0, 1]; masks are left as they are."""
    return v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)


def train_transforms(crop_size, scale_range=(0.5, 2.0), flip: bool = True,
                     class_uniform: float = 0.0) -> v2.Compose:
    """Random scale, crop to ``crop_size`` (a side or ``(height, width)``; padding images
    with 0, masks with 255), flip.

    ``class_uniform`` is the probability of a class-uniform crop (see :class:`ClassUniformCrop`).
    """
    steps = [RandomScale(*scale_range), ClassUniformCrop(crop_size, class_uniform)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(to_float_image())
    return v2.Compose(steps)


def eval_transforms() -> v2.Compose:
    """Evaluation sees full images: only the conversion to float."""
    return v2.Compose([to_float_image()])

"""Negative data: choose where a negative goes, cut its outline, paste it into the scene.

DenseHybrid trains on inlier scenes with *negative* patches pasted in. For one image:

1. draw the patch size ``(h, w)``, each side ~ U{min_side..max_side} (16-216 px in the
   paper) -- for flow samples rounded to the flow's squeeze factor;
2. draw the box in the scene where it goes: top-left uniform so that it fits;
3. cut the patch and its mask from the source:
   * ``rectangle``: the whole box (a crop of an ADE20K image, as the DenseHybrid code);
   * ``class_union``: the union of 1-2 class masks of an ADE20K image, cropped to their
     bounding box (the TPAMI paper), so negatives have object-like outlines;
   * ``flow``: a normalizing-flow sample is a full rectangle of the requested size;
4. paste: pixels under the mask take the patch; the segmentation target becomes 255 there
   (L_d ignores them) and the OOD target 1 (L_cla and L_x see them as negatives).

Everything takes a single image (``3×H×W``) or a batch (``N×3×H×W``), and a
``torch.Generator`` for reproducible draws. Pasting keeps the autograd graph of the
patch, so a flow can be trained through it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data.labels import IGNORE_INDEX, OOD_ANOMALY, OOD_INLIER, OOD_VOID

@dataclass(frozen=True)
class Box:
    """Where a patch goes: rows [top, top+height), columns [left, left+width)."""
    top: int
    left: int
    height: int
    width: int


def _randint(low: int, high: int, generator) -> int:
    """An integer uniform in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def sample_patch_size(min_side: int, max_side: int, image_size=None, multiple: int = 1,
                      generator: torch.Generator | None = None) -> tuple[int, int]:
    """Patch height and width, each uniform in [min_side, max_side], rounded down to a
    multiple of ``multiple`` (a flow's squeeze factor) and capped by ``image_size``."""
    if not 0 < min_side <= max_side:
        raise ValueError(f"need 0 < min_side <= max_side, got {min_side}, {max_side}")
    if min_side < multiple:
        raise ValueError(f"min_side {min_side} is smaller than the required multiple {multiple}")
    sides = []
    for axis in range(2):
        hi = max_side if image_size is None else min(max_side, image_size[axis])
        side = _randint(min(min_side, hi), hi, generator)
        sides.append(max(multiple, side // multiple * multiple))
    return sides[0], sides[1]


def random_box(image_size, patch_size, generator: torch.Generator | None = None) -> Box:
    """A box of ``patch_size`` placed uniformly inside an image of ``image_size`` (H, W)."""
    (H, W), (h, w) = image_size, patch_size
    if h > H or w > W:
        raise ValueError(f"patch {h}×{w} does not fit in an image of {H}×{W}")
    return Box(_randint(0, H - h, generator), _randint(0, W - w, generator), h, w)


def rectangle_mask(height: int, width: int, device=None) -> torch.Tensor:
    """The trivial outline: every pixel of the box (also the mask of a flow sample)."""
    return torch.ones(height, width, dtype=torch.bool, device=device)


def class_union_mask(classes: torch.Tensor, max_classes: int = 2, unlabeled: int = 0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Union of k ~ U{1..max_classes} distinct classes present in ``classes`` (H×W).

    The unlabeled id is never chosen. Returns an H×W bool mask; an image with no labelled
    class gives an all-False mask (callers fall back to a rectangle).
    """
    present = torch.unique(classes)
    present = present[present != unlabeled]
    if present.numel() == 0:
        return torch.zeros_like(classes, dtype=torch.bool)
    k = _randint(1, min(max_classes, present.numel()), generator)
    chosen = present[torch.randperm(present.numel(), generator=generator)[:k].to(present.device)]
    return torch.isin(classes, chosen)


def _bounding_box(mask: torch.Tensor) -> tuple[slice, slice]:
    rows = torch.nonzero(mask.any(1)).flatten()
    cols = torch.nonzero(mask.any(0)).flatten()
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def cut_negative(image: torch.Tensor, classes: torch.Tensor | None, size, kind: str = "class_union",
                 max_classes: int = 2, generator: torch.Generator | None = None):
    """Cut a negative patch of ``size`` (h, w) out of an ADE20K-format image.

    ``class_union``: the union of 1-2 class masks, cropped to its bounding box and resized
    to ``size`` (bilinear for the image, nearest for the mask). ``rectangle``: a random crop
    of 50-100 % of each side, resized. Returns ``(patch 3×h×w float, mask h×w bool)``.
    """
    if kind not in ("rectangle", "class_union"):
        raise ValueError(f"an ADE20K negative is cut as 'rectangle' or 'class_union', not {kind!r}")
    H, W = image.shape[-2:]
    mask = None
    if kind == "class_union":
        if classes is None:
            raise ValueError("the 'class_union' mask needs the negative image's class map")
        mask = class_union_mask(classes, max_classes, generator=generator)
        if not mask.any():
            mask = None  # nothing labelled: fall back to a rectangle
    if mask is None:
        ch, cw = _randint((H + 1) // 2, H, generator), _randint((W + 1) // 2, W, generator)
        t, l = _randint(0, H - ch, generator), _randint(0, W - cw, generator)
        rows, cols = slice(t, t + ch), slice(l, l + cw)
        mask = torch.ones(ch, cw, dtype=torch.bool, device=image.device)
    else:
        rows, cols = _bounding_box(mask)
        mask = mask[rows, cols]
    patch = F.interpolate(image[None, :, rows, cols].float(), size=tuple(size), mode="bilinear",
                          align_corners=False, antialias=True)[0].clamp(0, 1)
    mask = F.interpolate(mask[None, None].float(), size=tuple(size), mode="nearest-exact")[0, 0] > 0.5
    if not mask.any():  # a thin outline can vanish when shrunk: keep at least its centre
        mask[size[0] // 2, size[1] // 2] = True
    return patch, mask


def paste(image: torch.Tensor, seg_target: torch.Tensor, patch, patch_mask, box):
    """Paste patches into scenes and derive both training targets.

    Single image: ``image 3×H×W``, ``seg_target H×W``, one patch ``3×h×w``, mask ``h×w``,
    one :class:`Box`. Batch: ``N×3×H×W``, ``N×H×W`` and sequences of N patches, masks, boxes
    (patches may differ in size). Returns ``(mixed, seg_target, ood_target)``:

    * mixed = patch where mask, else the scene (differentiable w.r.t. the patch);
    * seg_target = 255 where pasted (the class is unknown), else unchanged;
    * ood_target = 1 where pasted, 255 where the scene was void, 0 elsewhere.
    """
    single = image.dim() == 3
    if single:
        image, seg_target = image[None], seg_target[None]
        patch, patch_mask, box = [patch], [patch_mask], [box]
    if image.dim() != 4 or seg_target.shape != (image.shape[0],) + image.shape[2:]:
        raise ValueError(f"expected image N×3×H×W with target N×H×W, got {tuple(image.shape)} "
                         f"and {tuple(seg_target.shape)}")
    if not len(patch) == len(patch_mask) == len(box) == image.shape[0]:
        raise ValueError(f"need one patch, mask and box per image: {image.shape[0]} images, "
                         f"{len(patch)} patches, {len(patch_mask)} masks, {len(box)} boxes")
    mixed, seg = image.clone(), seg_target.clone()
    ood = torch.full_like(seg_target, OOD_INLIER)
    ood[seg_target == IGNORE_INDEX] = OOD_VOID
    for i, (p, m, b) in enumerate(zip(patch, patch_mask, box)):
        if p.shape[-2:] != (b.height, b.width) or m.shape != (b.height, b.width):
            raise ValueError(f"patch {tuple(p.shape)} / mask {tuple(m.shape)} do not match box {b}")
        rows, cols = slice(b.top, b.top + b.height), slice(b.left, b.left + b.width)
        if b.top < 0 or b.left < 0 or rows.stop > image.shape[-2] or cols.stop > image.shape[-1]:
            raise ValueError(f"box {b} leaves the {image.shape[-2]}×{image.shape[-1]} image")
        m = m.to(torch.bool)
        mixed[i, :, rows, cols] = torch.where(m, p.to(mixed.dtype), mixed[i, :, rows, cols])
        seg[i, rows, cols] = seg[i, rows, cols].masked_fill(m, IGNORE_INDEX)
        ood[i, rows, cols] = ood[i, rows, cols].masked_fill(m, OOD_ANOMALY)
    if single:
        return mixed[0], seg[0], ood[0]
    return mixed, seg, ood


def paste_negatives(images: torch.Tensor, seg_targets: torch.Tensor, negatives, profile,
                    generator: torch.Generator | None = None, kind: str | None = None, flow=None,
                    synthetic_prob: float | None = None, flow_grad: bool = False):
    """Paste one negative into each image of a batch: a flow sample with probability b,
    otherwise a real ADE20K-format negative (the TPAMI mixture).

    ``negatives``: a dataset of ``(image, classes)``; ``flow``: a flow with ``sample`` and
    ``factor`` (None = real negatives only); ``synthetic_prob`` = b (default: the profile's).
    With ``flow_grad`` the flow samples keep their graph, so a loss on the mixed images
    trains the flow. Returns ``(mixed, seg_targets, ood_targets, boxes, synthetic)`` with
    ``synthetic[i]`` telling which images got a flow sample.
    """
    kind = kind or profile.negative_mask_kind
    b = profile.synthetic_prob if synthetic_prob is None else synthetic_prob
    patches, masks, boxes, synthetic = [], [], [], []
    for _ in range(images.shape[0]):
        use_flow = flow is not None and float(torch.rand((), generator=generator)) < b
        size = sample_patch_size(profile.negative_min_side, profile.negative_max_side, images.shape[-2:],
                                 multiple=flow.factor if use_flow else 1, generator=generator)
        box = random_box(images.shape[-2:], size, generator)
        if use_flow:
            with torch.set_grad_enabled(flow_grad):
                patch = flow.sample(1, *size, temperature=profile.flow_temperature, generator=generator)[0]
            mask = rectangle_mask(*size, device=images.device)
        else:
            neg_image, neg_classes = negatives[_randint(0, len(negatives) - 1, generator)]
            patch, mask = cut_negative(neg_image, neg_classes, size, kind,
                                       profile.negative_max_classes, generator)
        patches.append(patch.to(images.device))
        masks.append(mask.to(images.device))
        boxes.append(box)
        synthetic.append(use_flow)
    mixed, seg, ood = paste(images, seg_targets, patches, masks, boxes)
    return mixed, seg, ood, boxes, synthetic


def paste_real_negatives(images: torch.Tensor, seg_targets: torch.Tensor, negatives, profile,
                         generator: torch.Generator | None = None, kind: str | None = None):
    """Real ADE20K-format negatives only: ``(mixed, seg_targets, ood_targets, boxes)``."""
    mixed, seg, ood, boxes, _ = paste_negatives(images, seg_targets, negatives, profile, generator, kind)
    return mixed, seg, ood, boxes

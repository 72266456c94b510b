"""Negative data: cut a negative patch and its outline, choose where it goes, paste it.

DenseHybrid trains on inlier scenes with *negative* patches pasted in. For one image the
released code (``experiments/semseg_negatives_joint_th.py`` and the negative transforms of
``dlv3_cityscapes.py`` in matejgrcic/DenseHybrid) does this, and so do we:

1. a real negative: an ADE20K image, its shorter side resized to ``resize`` (384 px), then
   rescaled by s ~ U(0.5, 2), then a random ``crop``×``crop`` window (192 px). The patch
   is that whole window, at its own scale: nothing is resized after the cut;
2. its outline, drawn per image, with probability ½ each:

   * ``rectangle``: a box with sides from {16, 24, …} below the crop side, anywhere in it;
   * ``class_union``: the pixels of 2 ADE labels drawn *with replacement* among those in
     the window, so one or two classes, and the unlabeled id 0 may be one of them;

3. a synthetic negative (TPAMI, probability b instead of 1.): a normalizing-flow sample of
   h×w with sides from {16, …, 216} px in multiples of the flow's squeeze factor, all of it
   (the released joint trainer draws one such shape per step for the whole batch);
4. the window goes to a uniform position in the scene and is pasted under its mask: the
   segmentation target becomes 255 there (L_d ignores them) and the OOD target 1 (L_cla
   and L_x see them as negatives).

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
class NegativeRecipe:
    """How one negative per image is made: the cut of a real one, the size and temperature of
    a flow sample, and b, the probability of the flow sample (the profile's negative_* and
    flow_sample_* fields; see :mod:`dhlib.config`)."""
    resize: int
    scale_range: tuple[float, float]
    crop: int
    rect_prob: float
    class_draws: int
    synthetic_prob: float
    flow_min_side: int
    flow_max_side: int
    flow_temperature: float
    flow_shape_per_step: bool = False
    overhang: float = 0.0
    exclude_classes: tuple[int, ...] = ()

    @classmethod
    def from_profile(cls, profile) -> "NegativeRecipe":
        return cls(profile.negative_resize, tuple(profile.negative_scale_range), profile.negative_crop,
                   profile.negative_rect_prob, profile.negative_class_draws, profile.synthetic_prob,
                   profile.flow_sample_min_side, profile.flow_sample_max_side, profile.flow_temperature,
                   profile.flow_shape_per_step, profile.negative_overhang,
                   tuple(profile.negative_exclude_classes))


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


def random_box(image_size, patch_size, generator: torch.Generator | None = None, overhang: float = 0.0) -> Box:
    """A box of ``patch_size`` placed uniformly in an image of ``image_size`` (H, W).

    ``overhang`` = 0: inside the image, as the released code places its patches. ``overhang`` = o
    in (0, 1): up to ⌊o·h⌋ rows (⌊o·w⌋ columns) may lie beyond each edge, so that some negatives
    are cut by the image frame, as objects in photographs are; :func:`paste` clips them.
    """
    (H, W), (h, w) = image_size, patch_size
    if h > H or w > W:
        raise ValueError(f"patch {h}×{w} does not fit in an image of {H}×{W}")
    if not 0 <= overhang < 1:
        raise ValueError(f"overhang must be in [0, 1) (the share of a side that may leave the image), got {overhang}")
    out_h, out_w = int(overhang * h), int(overhang * w)
    return Box(_randint(-out_h, H - h + out_h, generator), _randint(-out_w, W - w + out_w, generator), h, w)


# Rectangle sides of the released code's sample_shape: range(16, crop, 8).
RECT_MIN_SIDE, RECT_STEP = 16, 8
MASK_KINDS = ("rectangle", "class_union")


def rectangle_mask(height: int, width: int, device=None) -> torch.Tensor:
    """The trivial outline: every pixel of the box (also the mask of a flow sample)."""
    return torch.ones(height, width, dtype=torch.bool, device=device)


def negative_window(image: torch.Tensor, classes: torch.Tensor, resize: int, scale_range, crop: int,
                    generator: torch.Generator | None = None):
    """The ``crop``×``crop`` window a real negative is cut from, with its class map.

    The shorter side goes to ``resize``·s, s ~ U(scale_range) (bilinear for the image,
    nearest for the classes), and a window is taken uniformly inside: the patch keeps the
    scale of a random zoom of the source, as the released code's JitterRandomCrop.
    """
    H, W = image.shape[-2:]
    if int(resize * scale_range[0]) < crop:
        raise ValueError(f"a negative rescaled to a {int(resize * scale_range[0])} px shorter side cannot give a "
                         f"{crop} px window: need negative_resize × negative_scale_range[0] >= negative_crop")
    s = scale_range[0] + (scale_range[1] - scale_range[0]) * float(torch.rand((), generator=generator))
    short = int(resize * s)
    size = (short, max(short, round(W * short / H))) if H <= W else (max(short, round(H * short / W)), short)
    scaled = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False,
                           antialias=True)[0].clamp(0, 1)
    scaled_classes = F.interpolate(classes[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
    top, left = _randint(0, size[0] - crop, generator), _randint(0, size[1] - crop, generator)
    rows, cols = slice(top, top + crop), slice(left, left + crop)
    return scaled[:, rows, cols], scaled_classes[rows, cols]


def rectangle_in_window(crop: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """A box with sides from {16, 24, …} below ``crop``, placed uniformly in the window."""
    sides = torch.arange(RECT_MIN_SIDE, crop, RECT_STEP)
    if sides.numel() == 0:
        raise ValueError(f"a {crop} px window holds no rectangle: negative_crop must exceed {RECT_MIN_SIDE}")
    h, w = (int(sides[_randint(0, sides.numel() - 1, generator)]) for _ in range(2))
    box = random_box((crop, crop), (h, w), generator)
    mask = torch.zeros(crop, crop, dtype=torch.bool, device=device)
    mask[box.top:box.top + h, box.left:box.left + w] = True
    return mask


def class_union_mask(classes: torch.Tensor, draws: int = 2,
                     generator: torch.Generator | None = None, exclude=()) -> torch.Tensor:
    """Union of the pixels of ``draws`` labels drawn uniformly, *with replacement*, among
    those present in ``classes`` (H×W): one to ``draws`` distinct classes. As in the
    released code every present id may be drawn, the unlabeled 0 included, except the ids in
    ``exclude`` while another id is present (a window of excluded classes alone still gives
    a negative, drawn among them)."""
    present = torch.unique(classes)
    allowed = present[~torch.isin(present, torch.as_tensor(exclude, dtype=present.dtype, device=present.device))]
    if allowed.numel():
        present = allowed
    picks = torch.randint(0, present.numel(), (draws,), generator=generator)
    return torch.isin(classes, present[picks.to(present.device)])


def cut_negative(image: torch.Tensor, classes: torch.Tensor, resize: int, scale_range, crop: int,
                 rect_prob: float = 0.5, draws: int = 2, generator: torch.Generator | None = None,
                 kind: str | None = None, exclude=()):
    """A real negative as the released code cuts it: ``(patch 3×crop×crop, mask crop×crop bool)``.

    The window comes from :func:`negative_window`; its mask is a rectangle with probability
    ``rect_prob``, else a class union of ``draws`` labels that skips the ids in ``exclude``
    (:func:`class_union_mask`); ``kind`` forces one of the two.
    """
    if kind not in (None,) + MASK_KINDS:
        raise ValueError(f"an ADE20K negative is cut as 'rectangle' or 'class_union', not {kind!r}")
    patch, window_classes = negative_window(image, classes, resize, scale_range, crop, generator)
    if kind is None:
        kind = "rectangle" if float(torch.rand((), generator=generator)) < rect_prob else "class_union"
    if kind == "rectangle":
        return patch, rectangle_in_window(crop, generator, image.device)
    return patch, class_union_mask(window_classes, draws, generator, exclude)


def _clip(box: Box, image_size):
    """The part of ``box`` inside an image of ``image_size``: ``((rows, cols) in the image,
    (rows, cols) in the patch)``, as slices."""
    H, W = image_size
    top, left = max(box.top, 0), max(box.left, 0)
    bottom, right = min(box.top + box.height, H), min(box.left + box.width, W)
    if top >= bottom or left >= right:
        raise ValueError(f"box {box} lies outside the {H}×{W} image")
    return ((slice(top, bottom), slice(left, right)),
            (slice(top - box.top, bottom - box.top), slice(left - box.left, right - box.left)))


def paste(image: torch.Tensor, seg_target: torch.Tensor, patch, patch_mask, box):
    """Paste patches into scenes and derive both training targets.

    Single image: ``image 3×H×W``, ``seg_target H×W``, one patch ``3×h×w``, mask ``h×w``,
    one :class:`Box`. Batch: ``N×3×H×W``, ``N×H×W`` and sequences of N patches, masks, boxes
    (patches may differ in size). A box may reach beyond the image (:func:`random_box` with an
    overhang): only its part inside is pasted. Returns ``(mixed, seg_target, ood_target)``:

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
        (rows, cols), (patch_rows, patch_cols) = _clip(b, image.shape[-2:])
        p, m = p[..., patch_rows, patch_cols], m[patch_rows, patch_cols].to(torch.bool)
        mixed[i, :, rows, cols] = torch.where(m, p.to(mixed.dtype), mixed[i, :, rows, cols])
        seg[i, rows, cols] = seg[i, rows, cols].masked_fill(m, IGNORE_INDEX)
        ood[i, rows, cols] = ood[i, rows, cols].masked_fill(m, OOD_ANOMALY)
    if single:
        return mixed[0], seg[0], ood[0]
    return mixed, seg, ood


def paste_negatives(images: torch.Tensor, seg_targets: torch.Tensor, negatives, recipe: NegativeRecipe,
                    generator: torch.Generator | None = None, kind: str | None = None, flow=None,
                    synthetic_prob: float | None = None, flow_grad: bool = False):
    """Paste one negative into each image of a batch: a flow sample with probability b,
    otherwise a real ADE20K-format negative (the TPAMI mixture).

    ``negatives``: a dataset of ``(image, classes)``; ``recipe``: how negatives are cut and
    sized; ``flow``: a flow with ``sample`` and ``factor`` (None = real negatives only);
    ``synthetic_prob`` = b (default: the recipe's); ``kind`` forces the real negatives'
    outline ('rectangle' or 'class_union'; default: the recipe's mixture). With ``flow_grad``
    the flow samples keep their graph, so a loss on the mixed images trains the flow. Returns
    ``(mixed, seg_targets, ood_targets, boxes, synthetic)`` with ``synthetic[i]`` telling
    which images got a flow sample. With the recipe's ``flow_shape_per_step`` the flow samples
    share one shape and come from one batched pass (the released joint trainer); otherwise
    each image's draws (kind, shape or real negative, box) come one image after the other.
    """
    b = recipe.synthetic_prob if synthetic_prob is None else synthetic_prob
    if flow is not None and recipe.flow_shape_per_step:
        patches, masks, synthetic = _negatives_sharing_a_flow_shape(images, negatives, recipe, b, generator, kind,
                                                                    flow, flow_grad)
        boxes = [random_box(images.shape[-2:], tuple(p.shape[-2:]), generator, recipe.overhang) for p in patches]
        mixed, seg, ood = paste(images, seg_targets, patches, masks, boxes)
        return mixed, seg, ood, boxes, synthetic
    patches, masks, boxes, synthetic = [], [], [], []
    for _ in range(images.shape[0]):
        use_flow = flow is not None and float(torch.rand((), generator=generator)) < b
        if use_flow:
            size = sample_patch_size(recipe.flow_min_side, recipe.flow_max_side,
                                     images.shape[-2:], multiple=flow.factor, generator=generator)
            with torch.set_grad_enabled(flow_grad):
                patch = flow.sample(1, *size, temperature=recipe.flow_temperature, generator=generator)[0]
            mask = rectangle_mask(*size, device=images.device)
        else:
            patch, mask = _real_negative(negatives, recipe, generator, kind)
        boxes.append(random_box(images.shape[-2:], tuple(patch.shape[-2:]), generator, recipe.overhang))
        patches.append(patch.to(images.device))
        masks.append(mask.to(images.device))
        synthetic.append(use_flow)
    mixed, seg, ood = paste(images, seg_targets, patches, masks, boxes)
    return mixed, seg, ood, boxes, synthetic


def _real_negative(negatives, recipe: NegativeRecipe, generator, kind):
    """A real negative drawn from the dataset, cut as the released code cuts it: ``(patch, mask)``."""
    neg_image, neg_classes = negatives[_randint(0, len(negatives) - 1, generator)]
    return cut_negative(neg_image, neg_classes, recipe.resize, recipe.scale_range, recipe.crop,
                        recipe.rect_prob, recipe.class_draws, generator, kind, recipe.exclude_classes)


def _negatives_sharing_a_flow_shape(images, negatives, recipe: NegativeRecipe, b: float, generator, kind,
                                    flow, flow_grad: bool):
    """The released joint trainer's draw: which images get a flow sample (probability b each),
    then one shape for all of them, sampled in one batched pass of the flow (one call instead of
    one per sample: what keeps a GPU busy). Returns ``(patches, masks, synthetic)``."""
    synthetic = [float(torch.rand((), generator=generator)) < b for _ in range(images.shape[0])]
    samples = iter(())
    if any(synthetic):
        size = sample_patch_size(recipe.flow_min_side, recipe.flow_max_side, images.shape[-2:],
                                 multiple=flow.factor, generator=generator)
        with torch.set_grad_enabled(flow_grad):
            samples = iter(flow.sample(sum(synthetic), *size, temperature=recipe.flow_temperature,
                                       generator=generator))
    patches, masks = [], []
    for use_flow in synthetic:
        if use_flow:
            patch = next(samples)
            mask = rectangle_mask(*patch.shape[-2:], device=images.device)
        else:
            patch, mask = _real_negative(negatives, recipe, generator, kind)
        patches.append(patch.to(images.device))
        masks.append(mask.to(images.device))
    return patches, masks, synthetic


def paste_real_negatives(images: torch.Tensor, seg_targets: torch.Tensor, negatives, recipe: NegativeRecipe,
                         generator: torch.Generator | None = None, kind: str | None = None):
    """Real ADE20K-format negatives only: ``(mixed, seg_targets, ood_targets, boxes)``."""
    mixed, seg, ood, boxes, _ = paste_negatives(images, seg_targets, negatives, recipe, generator, kind)
    return mixed, seg, ood, boxes

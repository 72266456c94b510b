"""Checks of a profile's fields: each problem names the field, its value and what it accepts.

:func:`dhlib.config.load_profile` runs them on every profile it returns, so a run that
cannot work stops before it starts, with a message instead of a failure deep in training.
"""
from __future__ import annotations

from .data.transforms import crop_hw
from .devices import device_problem


def validate(profile):
    """Reject settings that cannot work, saying which field is wrong and what it accepts."""
    problems = [device_problem(profile.device)] if device_problem(profile.device) else []
    if profile.fishyscapes_split not in ("Static", "LostAndFound"):
        problems.append(f"fishyscapes_split={profile.fishyscapes_split!r}: use 'Static' or 'LostAndFound'")
    problems += _negative_problems(profile)
    if not 0 < profile.input_scale <= 1:
        problems.append(f"input_scale={profile.input_scale}: a factor in (0, 1] (1 = full resolution)")
    elif profile.model == "wrn38" and profile.input_scale != 1:
        problems.append("input_scale applies to the small model only: set input_scale=1 for model='wrn38'")
    low, high = profile.scale_range
    if not 0 < low <= high:
        problems.append(f"scale_range={profile.scale_range}: need 0 < low <= high")
    if not 0 <= profile.class_uniform <= 1:
        problems.append(f"class_uniform={profile.class_uniform}: a probability in [0, 1]")
    if not 0 <= profile.synthetic_prob <= 1:
        problems.append(f"synthetic_prob={profile.synthetic_prob}: a probability in [0, 1]")
    if not profile.ood_focal_gamma >= 0:
        problems.append(f"ood_focal_gamma={profile.ood_focal_gamma}: a focusing exponent >= 0 (0 = the papers' L_cla)")
    if not profile.fresh_lr_mult > 0:
        problems.append(f"fresh_lr_mult={profile.fresh_lr_mult}: a positive factor (1 = one lr for all)")
    if profile.pretrain_steps < 1 or profile.val_every < 0:
        problems.append(f"pretrain_steps={profile.pretrain_steps}, val_every={profile.val_every}: "
                        "need pretrain_steps >= 1 and val_every >= 0 (0 = only at the end)")
    restarts = profile.pretrain_restarts
    if not isinstance(restarts, tuple) or not all(isinstance(r, int) and r >= 1 for r in restarts):
        problems.append(f"pretrain_restarts={restarts!r}: a tuple of steps >= 1, e.g. (20000,) or ()")
    for name in ("synthcity_height", "synthcity_width"):
        if getattr(profile, name) < 32:
            problems.append(f"{name}={getattr(profile, name)}: SynthCity needs at least 32 px")
    if profile.lr_schedule not in ("poly", "constant"):
        problems.append(f"lr_schedule={profile.lr_schedule!r}: use 'poly' or 'constant'")
    if profile.flow_update not in ("alternate", "joint"):
        problems.append(f"flow_update={profile.flow_update!r}: use 'alternate' or 'joint'")
    if profile.model not in ("small", "wrn38"):
        problems.append(f"model={profile.model!r}: use 'small' or 'wrn38'")
    factor = 2 ** profile.flow_levels
    if profile.flow_crop % factor:
        problems.append(f"flow_crop={profile.flow_crop} must be a multiple of 2^flow_levels = {factor}")
    if problems:
        raise ValueError(f"invalid '{profile.name}' profile: " + "; ".join(problems))
    return profile


def _negative_problems(profile) -> list[str]:
    """What is wrong with the negative-pasting fields (sizes must fit the training crops)."""
    problems = []
    if not 0 < profile.flow_sample_min_side <= profile.flow_sample_max_side:
        problems.append(f"flow sample sides {profile.flow_sample_min_side}..{profile.flow_sample_max_side}: "
                        "need 0 < flow_sample_min_side <= flow_sample_max_side")
    if not all(isinstance(side, int) and side > 0 for side in crop_hw(profile.crop_size)):
        problems.append(f"crop_size={profile.crop_size!r}: a positive side or (height, width)")
        return problems
    smallest = min(crop_hw(profile.crop_size))
    for name in ("flow_sample_max_side", "negative_crop"):
        if getattr(profile, name) > smallest:
            problems.append(f"{name}={getattr(profile, name)} exceeds crop_size={profile.crop_size}")
    if profile.negative_crop <= 16:
        problems.append(f"negative_crop={profile.negative_crop}: the window must exceed the 16 px smallest rectangle")
    low, high = profile.negative_scale_range
    if not 0 < low <= high or int(profile.negative_resize * low) < profile.negative_crop:
        problems.append(f"negative_resize={profile.negative_resize} × negative_scale_range={profile.negative_scale_range}"
                        f": need 0 < low <= high and negative_resize × low >= negative_crop={profile.negative_crop}")
    if not 0 <= profile.negative_rect_prob <= 1:
        problems.append(f"negative_rect_prob={profile.negative_rect_prob}: a probability in [0, 1]")
    if not all(isinstance(i, int) and 0 <= i <= 150 for i in profile.negative_exclude_classes):
        problems.append(f"negative_exclude_classes={profile.negative_exclude_classes}: ADE20K ids in 0-150")
    if profile.negative_class_draws < 1:
        problems.append(f"negative_class_draws={profile.negative_class_draws}: at least 1")
    if not 0 <= profile.negative_overhang < 1:
        problems.append(f"negative_overhang={profile.negative_overhang}: a share of a side in [0, 1)")
    elif profile.negative_overhang and profile.flow_update == "joint":
        problems.append(f"negative_overhang={profile.negative_overhang} with flow_update='joint': the joint "
                        "update's L_mle reads the whole box a sample covers; use negative_overhang=0")
    if profile.negatives_per_image < 1:
        problems.append(f"negatives_per_image={profile.negatives_per_image}: at least 1")
    return problems

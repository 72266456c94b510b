"""Anomalies (Fishyscapes-Static format): organic, smoothly shaded, star-convex sprites
(stones, creatures, spotted balls) pasted into new street scenes -- never used in training.

They share none of the straight edges, periodic patterns or one-sided lighting of the
negatives family, so the evaluation measures generalisation to unseen anomalies.
"""
from __future__ import annotations

import numpy as np

from ..labels import IGNORE_INDEX, LABEL_TO_TRAIN
from .canvas import Canvas, _hsv, finish, smooth_noise
from .scene import render_street
from .street import EGO
from .streams import rng_for

ANOMALY_KINDS = ("stone", "creature", "spotted ball")


def _anomaly_sprite(rng, size: int):
    """An anomaly of the evaluation family: ``(rgb s×s×3, alpha s×s)``.

    Smooth star-convex outlines ``r(φ) = 1 + Σ aₖ sin(kφ + φₖ)`` (or a body-and-legs
    creature) with Lambertian-like dome shading (it varies in two directions) and
    low-frequency mottling: none of the straight edges, periodic patterns or one-sided
    lighting of the negatives family.
    """
    kind = ANOMALY_KINDS[rng.integers(len(ANOMALY_KINDS))]
    s = size
    yy = (np.arange(s, dtype=np.float32)[:, None] + 0.5) / s * 2 - 1
    xx = (np.arange(s, dtype=np.float32)[None, :] + 0.5) / s * 2 - 1
    inside, dist = _sprite_outline(kind, yy, xx, rng)
    # shading: normal of a dome over the outline, lit from the upper left
    nz = np.sqrt(np.clip(dist, 0, 1))
    lightdot = np.clip(0.35 + 0.65 * (nz * 0.7 - xx * 0.3 - yy * 0.4), 0.15, 1.1)
    rgb = _sprite_colour(kind, s, lightdot, rng)
    rgb += 0.35 * np.clip(nz * 0.7 - xx * 0.3 - yy * 0.4 - 0.55, 0, 1)[..., None]  # highlight
    return np.clip(rgb, 0, 1).astype(np.float32), _soft_alpha(inside)


def _sprite_outline(kind, yy, xx, rng):
    """The sprite's mask on the [-1, 1]² grid, and a dome height ``dist`` (1 at its centre,
    0 at its edge) for the shading."""
    if kind == "creature":
        body = ((xx / 0.8) ** 2 + ((yy - 0.05) / 0.42) ** 2) <= 1
        head = ((xx - 0.72) / 0.25) ** 2 + ((yy + 0.35) / 0.22) ** 2 <= 1
        legs = np.zeros_like(body)
        for lx in (-0.55, -0.3, 0.3, 0.55):
            legs |= (np.abs(xx - lx) < 0.07) & (yy > 0.2) & (yy < 0.95)
        return body | head | legs, 1 - np.clip((xx / 0.8) ** 2 + ((yy - 0.05) / 0.42) ** 2, 0, 1)
    ang = np.arctan2(yy, xx)
    k = np.arange(2, 6)[:, None, None]
    amp = rng.uniform(0.03, 0.15, 4)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, 4)[:, None, None]
    radius = 0.8 * (1 + (amp * np.sin(k * ang[None] + phase)).sum(0))
    if kind == "spotted ball":
        radius = np.full_like(radius, 0.85)
    rho = np.hypot(xx, yy) / radius
    return rho <= 1, 1 - np.clip(rho, 0, 1) ** 2


def _sprite_colour(kind, s: int, lightdot, rng):
    """The kind's base colour, shaded and mottled; spotted balls get their dark spots."""
    # Every kind's colour is drawn, whatever the kind: drawing only one would shift all later
    # random numbers of the scene and so change its pixels.
    base = {"stone": _hsv(rng.uniform(0.05, 0.15), rng.uniform(0.05, 0.4), rng.uniform(0.3, 0.8)),
            "creature": _hsv(rng.uniform(0.0, 0.14), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.9)),
            "spotted ball": _hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))}[kind]
    mottle = smooth_noise(rng, s, s, 4, 4)
    rgb = base * (lightdot * (1 + 0.2 * mottle))[..., None]
    if kind == "spotted ball":
        spots = smooth_noise(rng, s, s, 6, 6) > 0.8
        rgb = np.where(spots[..., None], _hsv(rng.random(), 0.8, 0.3) * lightdot[..., None], rgb)
    return rgb


def _soft_alpha(inside):
    """The mask as alpha with a 1-px soft edge, so the paste does not show a jagged rim."""
    alpha = inside.astype(np.float32)
    alpha[1:-1, 1:-1] = (alpha[1:-1, 1:-1] * 4 + alpha[:-2, 1:-1] + alpha[2:, 1:-1]
                         + alpha[1:-1, :-2] + alpha[1:-1, 2:]) / 8
    return alpha


def render_anomaly_scene(seed: int, index: int, height: int = 256, width: int = 512):
    """A Fishyscapes-Static-format test image.

    Returns ``(image H×W×3 uint8, ood_label H×W uint8, label_ids H×W uint8)`` where
    ood_label is 0 inlier, 1 anomaly, 255 void (ignored Cityscapes ids, e.g. the bonnet),
    and label_ids is the underlying street's Cityscapes label map (anomaly pixels = 0).
    About two thirds of the anomalies stand on the ground at a depth-consistent size (like
    Lost and Found); the rest are pasted anywhere (like Fishyscapes Static).
    """
    rng = rng_for(seed, "anomalies", index)
    cv, cam, lay, light = render_street(rng, height, width)
    anomaly = np.zeros((height, width), bool)
    for _ in range(int(rng.integers(1, 4))):
        size, cx, cy = _anomaly_placement(rng, cam, lay, height, width)
        rgb, alpha = _anomaly_sprite(rng, size)
        _paste(cv, rgb, alpha, size, cx, cy, anomaly)
    label_ids = cv.ids.copy()
    label_ids[anomaly] = 0                      # unlabeled in the Cityscapes map
    ood = np.where(LABEL_TO_TRAIN[cv.ids] == IGNORE_INDEX, 255, 0).astype(np.uint8)
    ood[anomaly] = 1
    return finish(cv, light), ood, label_ids


def _anomaly_placement(rng, cam, lay, height: int, width: int):
    """Size (pixels) and centre of one anomaly: on the ground sized by depth, or anywhere."""
    if rng.random() < 0.67:   # on the road or sidewalk, sized by depth
        Z = rng.uniform(6, 40)
        X = rng.uniform(lay.road_left - lay.sidewalk[0], lay.road_right + lay.sidewalk[1])
        size_m = rng.uniform(0.4, 1.6)
        x, yb = cam.project(X, 0, Z)
        size = int(np.clip(size_m * cam.f / Z, 12, height * 0.6))
        return size, x, yb - size / 2
    size = int(rng.integers(20, int(height * 0.45)))    # anywhere, at any size
    return size, rng.uniform(0, width), rng.uniform(height * 0.2, height * 0.9)


def _paste(cv: Canvas, rgb, alpha, size: int, cx, cy, anomaly) -> None:
    """Blend the sprite into the canvas and mark its (mostly opaque) pixels in ``anomaly``."""
    x0, y0 = int(round(cx - size / 2)), int(round(cy - size / 2))
    reg = cv.region(x0, y0, x0 + size, y0 + size)
    if reg is None:
        return
    ys, xs, _, _ = reg
    a = alpha[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
    c = rgb[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
    a = a * (cv.ids[ys, xs] != EGO)          # stays in front of the scene, behind the bonnet
    cv.rgb[ys, xs] = cv.rgb[ys, xs] * (1 - a[..., None]) + c * a[..., None]
    anomaly[ys, xs] |= a >= 0.5


def held_out_anomaly_scenes(profile, count: int):
    """``count`` anomaly scenes that the exported test tree does not hold, for calibration.

    The test tree holds scenes ``0 … synthcity_anomaly_test − 1`` of the anomaly stream; these
    are the next ``count``. Returns ``(first index, [(image 3×H×W float, ood label H×W long)])``.
    """
    import torch
    first = profile.synthcity_anomaly_test
    scenes = []
    for index in range(first, first + count):
        image, ood, _ = render_anomaly_scene(profile.synthcity_seed, index, profile.synthcity_height,
                                             profile.synthcity_width)
        scenes.append((torch.from_numpy(image).permute(2, 0, 1).float() / 255, torch.from_numpy(ood).long()))
    return first, scenes

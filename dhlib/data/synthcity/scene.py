"""One street scene assembled: camera, layout and light, then everything painted back to
front, then the photometric finish."""
from __future__ import annotations

import numpy as np

from .camera import random_camera
from .canvas import Canvas, finish
from .objects import _ego_vehicle, _street_objects
from .street import _backdrop, _facades, _ground, _sky, random_layout
from .streams import rng_for


def random_light(rng: np.random.Generator) -> dict:
    """Exposure, white balance, sun or shade (and from which side) and sensor noise: varied
    so that a pixel's colour alone does not tell its class."""
    return {"gain": rng.uniform(0.55, 1.25), "tint": rng.uniform(0.88, 1.12, 3).astype(np.float32),
            "sunny": rng.random() < 0.5, "sun_side": rng.choice([-1, 1]),
            "noise": rng.uniform(0.01, 0.04)}


def render_street(rng: np.random.Generator, height: int, width: int):
    """Render one street scene; returns ``(canvas, camera, layout, light)`` before the
    photometric finish, so that anomalies can be pasted under the same light."""
    cv = Canvas(height, width, rng)
    cam = random_camera(rng, height, width)
    layout = random_layout(rng)
    light = random_light(rng)

    _sky(cv, cam, rng)
    _ground(cv, cam, layout, rng, light)
    _backdrop(cv, cam, layout, rng)
    for side in (-1, 1):
        _facades(cv, cam, layout, side, rng, light)
    for z, draw in sorted(_street_objects(cam, layout, rng), key=lambda t: -t[0]):
        draw(cv)
    if rng.random() < 0.4:
        _ego_vehicle(cv, rng)
    return cv, cam, layout, light


def render_scene(seed: int, index: int, height: int = 256, width: int = 512, stream: str = "train"):
    """One street scene: ``(image H×W×3 uint8, label_ids H×W uint8)`` in Cityscapes label ids."""
    rng = rng_for(seed, stream, index)
    cv, _, _, light = render_street(rng, height, width)
    return finish(cv, light), cv.ids.copy()

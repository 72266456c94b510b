"""The pin-hole camera: objects are placed in world metres and projected, so their image
size follows depth (``pixels = focal * metres / Z``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Camera:
    """Pin-hole camera at height ``cam_h`` metres looking along the street (+Z).

    A world point (X, Y, Z) -- X right, Y up, Z forward, metres -- projects to
    ``x = vx + f·X/Z`` and ``y = horizon + f·(cam_h − Y)/Z``.
    """
    horizon: float
    vx: float
    f: float
    cam_h: float

    def project(self, X, Y, Z):
        return self.vx + self.f * X / Z, self.horizon + self.f * (self.cam_h - Y) / Z


def random_camera(rng: np.random.Generator, height: int, width: int) -> Camera:
    """A camera with its own tilt (horizon row), heading (vanishing column), focal length
    and mounting height, so that no two scenes share one view of the street."""
    return Camera(horizon=height * rng.uniform(0.36, 0.5), vx=width * rng.uniform(0.38, 0.62),
                  f=width * rng.uniform(0.55, 0.75), cam_h=rng.uniform(1.3, 1.7))

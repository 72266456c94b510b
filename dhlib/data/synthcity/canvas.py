"""Canvas drawing: noise fields, an RGB image painted with its label map, basic colours,
and the photometric finish that turns the canvas into an sRGB image."""
from __future__ import annotations

import colorsys
import math
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=32)
def _interp_matrix(n: int, cells: int) -> np.ndarray:
    """``n × (cells+1)`` linear-interpolation weights from a coarse grid to n pixels."""
    pos = (np.arange(n) + 0.5) / n * cells
    lo = np.minimum(pos.astype(int), cells - 1)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((n, cells + 1), np.float32)
    m[np.arange(n), lo] = 1 - frac
    m[np.arange(n), lo + 1] = frac
    return m


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells_y: int, cells_x: int):
    """Bilinear value noise, N(0,1) on a coarse grid, upsampled separably: ``My G Mxᵀ``."""
    grid = rng.standard_normal((cells_y + 1, cells_x + 1), dtype=np.float32)
    return _interp_matrix(h, cells_y) @ grid @ _interp_matrix(w, cells_x).T


class Canvas:
    """An RGB image in linear [0, 1] floats plus its label-id map, painted back to front."""

    def __init__(self, height: int, width: int, rng: np.random.Generator):
        self.h, self.w = height, width
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.ids = np.zeros((height, width), np.uint8)  # 0 = 'unlabeled'
        self.grain = rng.standard_normal((height, width), dtype=np.float32)  # pixel texture
        self.blotch = smooth_noise(rng, height, width, max(height // 24, 2), max(width // 24, 2))

    def region(self, x0, y0, x1, y1):
        """Integer slices of the box [x0,x1)×[y0,y1) clipped to the image, with pixel-centre
        coordinates ``yy`` (column vector) and ``xx`` (row vector); None when empty."""
        ix0, iy0 = max(int(math.floor(x0)), 0), max(int(math.floor(y0)), 0)
        ix1, iy1 = min(int(math.ceil(x1)), self.w), min(int(math.ceil(y1)), self.h)
        if ix1 <= ix0 or iy1 <= iy0:
            return None
        yy = (np.arange(iy0, iy1, dtype=np.float32) + 0.5)[:, None]
        xx = (np.arange(ix0, ix1, dtype=np.float32) + 0.5)[None, :]
        return slice(iy0, iy1), slice(ix0, ix1), yy, xx

    def textured(self, ys, xs, colour, grain=0.0, blotch=0.0):
        """``colour·(1 + grain·n₁ + blotch·n₂)`` over a region, n the canvas noise fields."""
        shade = 1.0 + grain * self.grain[ys, xs] + blotch * self.blotch[ys, xs]
        return np.asarray(colour, np.float32) * shade[..., None]

    def paint(self, ys, xs, mask, colour, label_id: int):
        """Write ``colour`` (broadcastable to the region) and ``label_id`` where ``mask``."""
        mask = np.broadcast_to(mask, (ys.stop - ys.start, xs.stop - xs.start))
        colour = np.broadcast_to(np.asarray(colour, np.float32), mask.shape + (3,))
        self.rgb[ys, xs][mask] = colour[mask]
        self.ids[ys, xs][mask] = label_id

    def rect(self, x0, y0, x1, y1, colour, label_id, grain=0.03, blotch=0.03):
        r = self.region(x0, y0, x1, y1)
        if r is not None:
            ys, xs, _, _ = r
            self.paint(ys, xs, True, self.textured(ys, xs, colour, grain, blotch), label_id)

    def ellipse(self, cx, cy, rx, ry, colour, label_id, grain=0.03, blotch=0.03):
        r = self.region(cx - rx, cy - ry, cx + rx, cy + ry)
        if r is not None:
            ys, xs, yy, xx = r
            mask = ((xx - cx) / max(rx, 1e-3)) ** 2 + ((yy - cy) / max(ry, 1e-3)) ** 2 <= 1
            self.paint(ys, xs, mask, self.textured(ys, xs, colour, grain, blotch), label_id)

    def polygon(self, points, colour, label_id, grain=0.03, blotch=0.03):
        """Fill a convex polygon given counter- or clockwise by half-plane tests."""
        pts = np.asarray(points, np.float32)
        r = self.region(pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())
        if r is None:
            return
        ys, xs, yy, xx = r
        sign = np.sign(_signed_area(pts)) or 1.0
        mask = np.ones((yy.shape[0], xx.shape[1]), bool)
        for (ax, ay), (bx, by) in zip(pts, np.roll(pts, -1, axis=0)):
            mask &= sign * ((bx - ax) * (yy - ay) - (by - ay) * (xx - ax)) >= 0
        self.paint(ys, xs, mask, self.textured(ys, xs, colour, grain, blotch), label_id)


def _signed_area(pts):
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _grey(rng, lo, hi):
    return np.full(3, rng.uniform(lo, hi), np.float32) * rng.uniform(0.95, 1.05, 3)


def _hsv(h, s, v):
    """HSV (all in [0, 1]) to RGB float32."""
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32)


def finish(cv: Canvas, light) -> np.ndarray:
    """Exposure, white balance, vignetting and sensor noise; returns H×W×3 uint8 sRGB."""
    h, w = cv.h, cv.w
    yy = (np.arange(h, dtype=np.float32) - h / 2)[:, None] / h
    xx = (np.arange(w, dtype=np.float32) - w / 2)[None, :] / w
    vignette = 1.0 - 0.35 * (xx ** 2 + yy ** 2)
    img = cv.rgb * (light["gain"] * vignette)[..., None] * light["tint"]
    img += light["noise"] * np.roll(cv.grain, (7, 13), axis=(0, 1))[..., None]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)

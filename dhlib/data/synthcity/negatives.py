"""Negatives (ADE20K format): indoor scenes of man-made objects with straight or circular
outlines, periodic patterns or irregular finishes, lit flat or from one side.

They are the only outliers training sees; the evaluation anomalies (:mod:`.anomalies`) come
from a disjoint family, so the evaluation measures generalisation to unseen anomalies.
"""
from __future__ import annotations

import math

import numpy as np

from .canvas import Canvas, _hsv, finish, smooth_noise
from .streams import rng_for

ADE_WALL, ADE_FLOOR = 1, 4  # ADE20K ids of the two background classes used here
# Object kinds of the negatives family: (name, ADE-style class id, outline, texture)
NEGATIVE_KINDS = [
    ("striped crate", 42, "rect", "stripes"),
    ("checked board", 23, "rect", "checks"),
    ("dotted cushion", 40, "rounded", "dots"),
    ("plaid rug", 29, "rect", "plaid"),
    ("wooden cabinet", 11, "rect", "planks"),
    ("round table", 16, "disc", "planks"),
    ("ring toy", 109, "ring", "stripes"),
    ("star sign", 44, "star", "flat"),
    ("hexagon tile", 122, "polygon", "checks"),
    ("triangle pennant", 150, "triangle", "stripes"),
    ("cross panel", 101, "cross", "dots"),
    ("lamp shade", 37, "trapezoid", "flat"),
]

# Surfaces of the negatives family: the periodic patterns below, or irregular man-made
# finishes (woven fabric, veined marble, brushed metal), each under one of the room lights.
NEGATIVE_SURFACES = ("periodic", "periodic", "fabric", "marble", "brushed")
NEGATIVE_LIGHTS = ("flat", "ramp", "cylinder")


def _periodic_texture(kind, yy, xx, rng, c1, c2):
    """Flat two-colour periodic patterns: the visual signature of the negatives family."""
    period = rng.uniform(4, 14)
    theta = rng.uniform(0, np.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    if kind == "stripes":
        t = np.mod(u, period) < period / 2
    elif kind == "checks":
        t = (np.mod(u, period) < period / 2) ^ (np.mod(v, period) < period / 2)
    elif kind == "dots":
        t = np.hypot(np.mod(u, period) - period / 2, np.mod(v, period) - period / 2) < period / 4
    elif kind == "plaid":
        t = (np.mod(u, period) < period / 4) | (np.mod(v, period * 1.3) < period / 4)
    elif kind == "planks":
        t = np.mod(v + 0.8 * np.sin(u / period), period) < 0.8
    else:
        t = np.zeros(np.broadcast(yy, xx).shape, bool)
    return np.where(t[..., None], c2, c1)


def _irregular_texture(kind, yy, xx, rng, c1, c2):
    """Non-periodic finishes built from value noise, all anisotropic or fine-grained.

    fabric: fine isotropic weave noise; marble: bands ``sin(u/p + 3·n)`` bent by noise;
    brushed: streaks that vary across one direction only.
    """
    h, w = yy.shape[0], xx.shape[1]
    theta = rng.uniform(0, np.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    if kind == "fabric":
        n = smooth_noise(rng, h, w, max(h // 3, 2), max(w // 3, 2))
        return c1 * (1 + 0.22 * n)[..., None]
    if kind == "marble":
        n = smooth_noise(rng, h, w, max(h // 16, 2), max(w // 16, 2))
        t = 0.5 + 0.5 * np.sin(u / rng.uniform(3, 10) + 3.0 * n)
        return c1 + (c2 - c1) * (t ** 3)[..., None]
    if kind == "brushed":  # streaks along theta: noise of the coordinate across them only
        v = -xx * math.sin(theta) + yy * math.cos(theta)
        v = v - v.min()
        streaks = np.interp(v, np.arange(int(v.max()) + 2), rng.standard_normal(int(v.max()) + 2))
        return c1 * (1 + 0.12 * streaks)[..., None]
    raise ValueError(kind)


def _room_light(yy, xx, cx, cy, r, rng):
    """Brightness of a flat or cylindrical object under a distant light: a function of one
    coordinate u across the object (a linear ramp, or the cosine profile of a cylinder),
    never the two-dimensional dome shading of the anomaly family."""
    kind = NEGATIVE_LIGHTS[rng.integers(len(NEGATIVE_LIGHTS))]
    theta = rng.uniform(0, 2 * np.pi)
    u = np.clip(((xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)) / r, -1, 1)
    if kind == "flat":
        return np.ones(np.broadcast(yy, xx).shape, np.float32)
    if kind == "ramp":
        return (0.8 + 0.3 * u).astype(np.float32)
    return (0.35 + 0.75 * np.sqrt(1 - u ** 2) * (0.75 + 0.25 * u)).astype(np.float32)  # cylinder


def _outline_mask(kind, yy, xx, cx, cy, r, rng):
    dx, dy = (xx - cx) / r, (yy - cy) / r
    if kind == "rect":
        a = rng.uniform(0.5, 1.0)
        return (np.abs(dx) <= 1) & (np.abs(dy) <= a)
    if kind == "rounded":
        return (np.abs(dx) ** 4 + np.abs(dy) ** 4) <= 1
    if kind == "disc":
        return dx ** 2 + dy ** 2 <= 1
    if kind == "ring":
        d = dx ** 2 + dy ** 2
        return (d <= 1) & (d >= 0.35)
    if kind in ("star", "polygon", "triangle"):
        n = {"star": 5, "polygon": 6, "triangle": 3}[kind]
        ang = np.arctan2(dy, dx) + rng.uniform(0, np.pi)
        sector = np.mod(ang, 2 * np.pi / n) - np.pi / n
        if kind == "star":  # straight-edged star: radius varies linearly with the angle
            limit = 0.45 + 0.55 * np.abs(sector) / (np.pi / n)
        else:               # regular polygon: distance to the edge along this direction
            limit = math.cos(np.pi / n) / np.cos(sector)
        return np.hypot(dx, dy) <= limit
    if kind == "cross":
        return ((np.abs(dx) <= 1) & (np.abs(dy) <= 0.3)) | ((np.abs(dx) <= 0.3) & (np.abs(dy) <= 1))
    if kind == "trapezoid":
        return (np.abs(dy) <= 0.8) & (np.abs(dx) <= 0.5 + 0.4 * (dy + 0.8) / 1.6)
    raise ValueError(kind)


def render_negative(seed: int, index: int):
    """One ADE20K-format negative image: ``(image H×W×3 uint8, classes H×W uint8)``.

    An indoor backdrop (wall id 1, floor id 4) holds 2-5 objects of the negatives family;
    sizes vary like ADE20K images do (here 192-320 px a side). Each object has a periodic
    pattern or an irregular finish (:data:`NEGATIVE_SURFACES`) under a flat, ramp or
    cylinder light: with flat periodic patterns alone, the OOD head learns to fire on sharp
    edges rather than on unfamiliar objects (README, "Negatives").
    """
    rng = rng_for(seed, "negatives", index)
    h, w = int(rng.integers(192, 321)), int(rng.integers(192, 321))
    cv = Canvas(h, w, rng)
    _room(cv, rng)
    for _ in range(int(rng.integers(2, 6))):
        _negative_object(cv, rng)
    light = {"gain": rng.uniform(0.7, 1.2), "tint": rng.uniform(0.9, 1.1, 3).astype(np.float32),
             "noise": rng.uniform(0.005, 0.02)}
    return finish(cv, light), cv.ids.copy()


def _room(cv: Canvas, rng):
    """A patterned wall over the whole image and a planked floor below a random row."""
    h, w = cv.h, cv.w
    yy_all = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xx_all = np.arange(w, dtype=np.float32)[None, :] + 0.5
    floor_row = h * rng.uniform(0.45, 0.8)
    c1, c2 = _hsv(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.4, 0.9)), \
        _hsv(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.3, 0.8))
    wall = _periodic_texture(rng.choice(["stripes", "flat", "dots"]), yy_all, xx_all, rng, c1, c1 * 0.85)
    floor = _periodic_texture("planks", yy_all, xx_all, rng, c2, c2 * 0.7)
    full = (slice(0, h), slice(0, w))
    cv.paint(*full, True, wall * (1 + 0.04 * cv.grain)[..., None], ADE_WALL)
    cv.paint(*full, yy_all >= floor_row, floor * (1 + 0.04 * cv.grain)[..., None], ADE_FLOOR)


def _negative_object(cv: Canvas, rng):
    """One object of the negatives family: an outline, a surface and a room light."""
    name, class_id, outline, texture = NEGATIVE_KINDS[rng.integers(len(NEGATIVE_KINDS))]
    r = rng.uniform(0.1, 0.3) * min(cv.h, cv.w)
    cx, cy = rng.uniform(r, cv.w - r), rng.uniform(r, cv.h - r)
    reg = cv.region(cx - r, cy - r, cx + r, cy + r)
    if reg is None:
        return
    ys, xs, yy, xx = reg
    mask = _outline_mask(outline, yy, xx, cx, cy, r, rng)
    a, b = _hsv(rng.random(), rng.uniform(0.3, 1), rng.uniform(0.3, 1)), \
        _hsv(rng.random(), rng.uniform(0.3, 1), rng.uniform(0.3, 1))
    surface = NEGATIVE_SURFACES[rng.integers(len(NEGATIVE_SURFACES))]
    if surface == "periodic":
        colour = _periodic_texture(texture, yy, xx, rng, a, b)
    else:
        colour = _irregular_texture(surface, yy, xx, rng, a, b)
    colour = colour * _room_light(yy, xx, cx, cy, r, rng)[..., None]
    colour = colour * (1 + 0.03 * cv.grain[ys, xs])[..., None]
    cv.paint(ys, xs, mask, colour, class_id)

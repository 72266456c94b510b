"""SynthCity: a procedural street world written to disk in the real dataset formats.

Nothing can be downloaded on a laptop in a classroom or in CI, yet every loader,
transform and evaluator of the paper tier must run. SynthCity renders street scenes
with a pin-hole camera over a ground plane, so the quick tier is a real (small)
segmentation problem:

* perspective road with lane marks, kerbed sidewalks, grass verges, building facades with
  windows and floors, hedges and trees, low walls and fences, poles with signs and traffic
  lights, cars and buses on the road, people on the sidewalk, a far backdrop and a sky;
* objects are placed in world metres and projected, so their image size follows depth
  (``pixels = focal * metres / Z``); near objects occlude far ones (painter's order);
* colours are drawn from overlapping families (grey asphalt, grey paving, grey concrete,
  grey cars, white clouds, white facades...) under random exposure, white balance,
  sun/shade and sensor noise, so a pixel's colour alone does not tell its class:
  a per-pixel RGB classifier scores far below a CNN (``benchmarks/bench_synthcity.py``).

It writes three trees (see :func:`export`):

1. a **Cityscapes** tree (``leftImg8bit`` + ``gtFine`` with official *label ids*);
2. an **ADE20K-format negatives** tree: indoor scenes of man-made objects with straight or
   circular outlines, periodic patterns (stripes, checks, dots, planks) or irregular finishes
   (fabric, marble, brushed metal), lit flat or from one side, annotated with class ids
   1-150 (0 = unlabeled);
3. a **Fishyscapes-Static-format** test tree: new street scenes with pasted anomalies from
   a *disjoint* family -- organic, smoothly shaded, star-convex shapes (stones, creatures,
   spotted balls) -- labelled 0 inlier / 1 anomaly / 255 void.

Training negatives come only from tree 2; evaluation anomalies only from tree 3, so the
evaluation measures generalisation to unseen anomalies.

Every image is a pure function of ``(seed, stream, index)``: the same call always gives the
same pixels, on any machine, in any order, in parallel or not.
"""
from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .labels import LABEL_ID

# Label ids (the on-disk Cityscapes ids, not train ids) used by SynthCity.
ROAD, SIDEWALK, BUILDING, WALL, FENCE = (LABEL_ID[n] for n in
                                         ("road", "sidewalk", "building", "wall", "fence"))
POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = (LABEL_ID[n] for n in (
    "pole", "traffic light", "traffic sign", "vegetation", "terrain", "sky"))
PERSON, CAR, BUS, EGO = (LABEL_ID[n] for n in ("person", "car", "bus", "ego vehicle"))

# Bump whenever a change to the renderer changes pixels: exports made by another version
# are then written anew instead of being re-used.
GENERATOR_VERSION = 3  # 3: negatives with irregular finishes and one-sided room light

# Streams: independent random sequences for each thing SynthCity writes.
STREAMS = {"train": 1, "val": 2, "negatives": 3, "anomalies": 4}

# Cities of the Cityscapes-format tree (file names follow {city}_{seq:06d}_{frame:06d}).
CITIES = {"train": ("arcadia", "brickton", "cobbleford"), "val": ("dunmore",)}


def rng_for(seed: int, stream: str, index: int) -> np.random.Generator:
    """The random generator of one image: a pure function of (seed, stream, index)."""
    return np.random.default_rng([seed, STREAMS[stream], index])


# ------------------------------------------------------------------------------------------
# Noise fields and the canvas
# ------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------
# Camera and colour families
# ------------------------------------------------------------------------------------------

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


def _grey(rng, lo, hi):
    return np.full(3, rng.uniform(lo, hi), np.float32) * rng.uniform(0.95, 1.05, 3)


def _hsv(h, s, v):
    """HSV (all in [0, 1]) to RGB float32."""
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i],
                    np.float32)


def _facade_colour(rng):
    kind = rng.integers(4)
    if kind == 0:
        return _grey(rng, 0.35, 0.85)                                   # concrete / render
    if kind == 1:
        return _hsv(rng.uniform(0.02, 0.08), rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.6))  # brick
    if kind == 2:
        return _hsv(rng.uniform(0.08, 0.15), rng.uniform(0.15, 0.4), rng.uniform(0.6, 0.9))   # sandstone
    return _hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.35), rng.uniform(0.4, 0.85))          # painted


def _vehicle_colour(rng):
    if rng.random() < 0.6:
        return _grey(rng, 0.05, 0.9)                          # black, grey, silver, white
    return _hsv(rng.uniform(0, 1), rng.uniform(0.4, 0.9), rng.uniform(0.25, 0.8))


def _clothes_colour(rng):
    if rng.random() < 0.5:
        return _grey(rng, 0.05, 0.7)
    return _hsv(rng.uniform(0, 1), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8))


def _green(rng, dark=False):
    return _hsv(rng.uniform(0.18, 0.33), rng.uniform(0.3, 0.75),
                rng.uniform(0.12, 0.3) if dark else rng.uniform(0.25, 0.55))


# ------------------------------------------------------------------------------------------
# The street scene
# ------------------------------------------------------------------------------------------

@dataclass
class StreetLayout:
    """Lateral positions (metres, X) of the road, sidewalks and facades, and the street end."""
    road_left: float
    road_right: float
    lanes: int
    sidewalk: tuple[float, float]  # widths, left and right
    verge: tuple[float, float]     # grass between sidewalk and facade
    street_end: float              # Z of the cross-street backdrop

    def facade_x(self, side: int) -> float:
        if side < 0:
            return self.road_left - self.sidewalk[0] - self.verge[0]
        return self.road_right + self.sidewalk[1] + self.verge[1]

    def sidewalk_span(self, side: int) -> tuple[float, float]:
        if side < 0:
            return self.road_left - self.sidewalk[0], self.road_left
        return self.road_right, self.road_right + self.sidewalk[1]


def render_street(rng: np.random.Generator, height: int, width: int):
    """Render one street scene; returns ``(canvas, camera, layout, light)`` before the
    photometric finish, so that anomalies can be pasted under the same light."""
    cv = Canvas(height, width, rng)
    cam = Camera(horizon=height * rng.uniform(0.36, 0.5), vx=width * rng.uniform(0.38, 0.62),
                 f=width * rng.uniform(0.55, 0.75), cam_h=rng.uniform(1.3, 1.7))
    lanes = int(rng.integers(2, 5))
    lane_w = rng.uniform(2.8, 3.6)
    road_left = -rng.uniform(0.3, 0.7) * lanes * lane_w
    layout = StreetLayout(road_left, road_left + lanes * lane_w, lanes,
                          (rng.uniform(1.8, 4.5), rng.uniform(1.8, 4.5)),
                          tuple(rng.uniform(0, 3.0, 2) * (rng.random(2) < 0.5)),
                          street_end=rng.uniform(45, 160))
    light = {"gain": rng.uniform(0.55, 1.25), "tint": rng.uniform(0.88, 1.12, 3).astype(np.float32),
             "sunny": rng.random() < 0.5, "sun_side": rng.choice([-1, 1]),
             "noise": rng.uniform(0.01, 0.04)}

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


def _sky(cv: Canvas, cam: Camera, rng):
    weather = rng.choice(["clear", "overcast", "dusk"], p=[0.45, 0.4, 0.15])
    if weather == "clear":
        zenith, horizon = _hsv(rng.uniform(0.55, 0.62), rng.uniform(0.4, 0.7), rng.uniform(0.7, 0.95)), \
            _hsv(rng.uniform(0.55, 0.6), rng.uniform(0.1, 0.3), rng.uniform(0.85, 1.0))
    elif weather == "overcast":
        zenith, horizon = _grey(rng, 0.55, 0.85), _grey(rng, 0.7, 0.95)
    else:
        zenith, horizon = _hsv(rng.uniform(0.6, 0.75), rng.uniform(0.3, 0.5), rng.uniform(0.4, 0.6)), \
            _hsv(rng.uniform(0.03, 0.1), rng.uniform(0.4, 0.7), rng.uniform(0.8, 1.0))
    t = np.clip(np.arange(cv.h, dtype=np.float32) / max(cam.horizon, 1), 0, 1)[:, None, None]
    sky = zenith * (1 - t) + horizon * t
    clouds = np.clip(cv.blotch * rng.uniform(0.3, 0.9) + rng.uniform(-0.6, 0.3), 0, 1)[..., None]
    cv.rgb[:] = sky * (1 - clouds) + _grey(rng, 0.8, 1.0) * clouds
    cv.ids[:] = SKY


def _ground(cv: Canvas, cam: Camera, lay: StreetLayout, rng, light):
    """Road, sidewalks and verges: every pixel below the horizon is a ground-plane point."""
    y0 = int(math.ceil(cam.horizon + 0.5))
    if y0 >= cv.h:
        return
    ys, xs = slice(y0, cv.h), slice(0, cv.w)
    dy = (np.arange(y0, cv.h, dtype=np.float32) + 0.5 - cam.horizon)[:, None]
    Z = cam.f * cam.cam_h / dy                                   # depth of each row
    X = (np.arange(cv.w, dtype=np.float32)[None, :] + 0.5 - cam.vx) * cam.cam_h / dy

    # Start with grass (terrain) everywhere, then lay sidewalks and the road over it.
    grass = _green(rng) if rng.random() < 0.75 else _hsv(rng.uniform(0.07, 0.12), 0.45, 0.4)
    cv.paint(ys, xs, True, cv.textured(ys, xs, grass, 0.25, 0.25), TERRAIN)

    paving = _grey(rng, 0.4, 0.75) if rng.random() < 0.6 else \
        _hsv(rng.uniform(0.0, 0.1), rng.uniform(0.2, 0.45), rng.uniform(0.4, 0.7))
    tile = rng.uniform(0.4, 0.8)
    joints = (np.mod(X, tile) < 0.05) | (np.mod(Z, tile) < 0.05)
    for side in (-1, 1):
        a, b = lay.sidewalk_span(side)
        on = (X >= a) & (X < b)
        kerb = on & (np.abs(X - (b if side < 0 else a)) < 0.25)
        colour = cv.textured(ys, xs, paving, 0.08, 0.12) * np.where(joints, 0.75, 1.0)[..., None]
        colour = np.where(kerb[..., None], colour * 1.25, colour)
        cv.paint(ys, xs, on, colour, SIDEWALK)

    asphalt = _grey(rng, 0.18, 0.45)
    on_road = (X >= lay.road_left) & (X < lay.road_right)
    colour = cv.textured(ys, xs, asphalt, 0.12, 0.15)
    lane_w = (lay.road_right - lay.road_left) / lay.lanes
    paint_colour = np.array([0.9, 0.9, 0.85] if rng.random() < 0.8 else [0.9, 0.8, 0.3], np.float32)
    marks = np.zeros_like(on_road)
    for k in range(1, lay.lanes):
        dash = np.mod(Z + rng.uniform(0, 9), 9.0) < 3.0
        marks |= (np.abs(X - (lay.road_left + k * lane_w)) < 0.08) & dash
    for edge in (lay.road_left + 0.3, lay.road_right - 0.3):
        marks |= np.abs(X - edge) < 0.07
    if rng.random() < 0.25:  # a zebra crossing
        zc = rng.uniform(6, 25)
        marks |= (np.abs(Z - zc) < 2.0) & (np.mod(X, 1.0) < 0.5)
    colour = np.where(marks[..., None], paint_colour * (0.9 + 0.1 * cv.grain[ys, xs, None]), colour)
    cv.paint(ys, xs, on_road, colour, ROAD)

    if light["sunny"]:  # the shadow of one row of buildings falls across part of the street
        s = light["sun_side"]
        edge = lay.facade_x(s) - s * (rng.uniform(2, 12) + 2 * np.sin(Z / rng.uniform(4, 12)))
        shadow = (X * s > edge * s)
        cv.rgb[ys, xs][shadow] *= rng.uniform(0.45, 0.65)


def _backdrop(cv: Canvas, cam: Camera, lay: StreetLayout, rng):
    """The cross street at Z = street_end: a band of buildings or trees closing the view."""
    Z = lay.street_end
    base = cam.project(0, 0, Z)[1]
    x_edges = np.sort(rng.uniform(0, cv.w, int(rng.integers(3, 8))))
    x_edges = np.concatenate([[0], x_edges, [cv.w]])
    for x0, x1 in zip(x_edges[:-1], x_edges[1:]):
        h_m = rng.uniform(6, 30)
        top = cam.project(0, h_m, Z)[1]
        if rng.random() < 0.7:
            cv.rect(x0, top, x1, base, _facade_colour(rng), BUILDING, 0.05, 0.1)
        else:
            r = cv.region(x0, top - 4, x1, base)
            if r is not None:
                ys, xs, yy, xx = r
                crown = yy > top + 3 * np.sin(xx / 3.0 + rng.uniform(0, 6)) + 2 * cv.blotch[ys, xs]
                cv.paint(ys, xs, crown, cv.textured(ys, xs, _green(rng, dark=True), 0.3, 0.2), VEGETATION)


def _facades(cv: Canvas, cam: Camera, lay: StreetLayout, side: int, rng, light):
    """The row of buildings (and hedges, walls, fences) on one side of the street.

    Facades are vertical planes X = B. A column x sees the plane at depth
    ``Z = f·B/(x − vx)``; a point at height Y on it is at row ``horizon + f·(cam_h − Y)/Z``.
    The street is cut along Z into lots, each a building of its own height, colour and
    window grid, or a hedge, or a low wall/fence in front of a grass lot.
    """
    B = lay.facade_x(side)
    if side < 0:
        xs = slice(0, max(0, min(cv.w, int(cam.vx))))
    else:
        xs = slice(min(cv.w, max(0, int(math.ceil(cam.vx)))), cv.w)
    if xs.stop <= xs.start:
        return
    x = np.arange(xs.start, xs.stop, dtype=np.float32) + 0.5
    with np.errstate(divide="ignore"):
        Z = cam.f * B / (x - cam.vx)                         # per column
    visible = (Z > 0.5) & (Z < lay.street_end)
    if not visible.any():
        return

    # Lots along the street: [start, end) in Z with their own kind and looks.
    starts = [0.0]
    while starts[-1] < lay.street_end:
        starts.append(starts[-1] + rng.uniform(8, 35))
    n = len(starts) - 1
    kinds = rng.choice(["building", "hedge", "wall", "fence"], n, p=[0.64, 0.12, 0.12, 0.12])
    heights = np.where(kinds == "building", rng.uniform(7, 28, n),
                       np.where(kinds == "hedge", rng.uniform(1.2, 4.0, n), rng.uniform(1.0, 2.5, n)))
    lot = np.clip(np.searchsorted(starts, np.where(visible, Z, 0), side="right") - 1, 0, n - 1)
    Zc = np.where(visible, Z, 1.0)
    top_row = cam.horizon + cam.f * (cam.cam_h - heights[lot]) / Zc
    base_row = cam.horizon + cam.f * cam.cam_h / Zc

    # Only the rows that some visible lot covers need any work.
    r0 = int(np.clip(np.floor(top_row[visible].min()) - 4, 0, cv.h))
    r1 = int(np.clip(np.ceil(base_row[visible].max()), 0, cv.h))
    if r1 <= r0:
        return
    ys = slice(r0, r1)
    rows = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
    Y = cam.cam_h - (rows - cam.horizon) * Zc[None, :] / cam.f    # height on the plane
    inside = visible[None, :] & (rows >= top_row[None, :]) & (rows < base_row[None, :])
    shade = 0.7 if (light["sunny"] and side == light["sun_side"]) else 1.0

    colours = np.stack([_facade_colour(rng) for _ in range(n)]) * shade
    pitch = rng.uniform(2.0, 4.0, n)       # window spacing along the street
    floor_h = rng.uniform(2.8, 3.6, n)     # storey height
    win_w, win_h = rng.uniform(0.3, 0.7, n), rng.uniform(0.35, 0.65, n)
    glass = np.stack([_grey(rng, 0.05, 0.45) * np.array([0.9, 0.95, 1.1], np.float32) for _ in range(n)])

    # Buildings: wall colour, then windows where (u mod pitch, Y mod storey) fall in the pane.
    building = inside & (kinds[lot] == "building")[None, :]
    texture = 1.0 + 0.05 * cv.grain[ys, xs] + 0.12 * cv.blotch[ys, xs]
    wall_rgb = colours[lot][None, :, :] * texture[..., None]
    u = np.mod(Zc - np.asarray(starts)[lot], pitch[lot])[None, :] / pitch[lot][None, :]
    v = np.mod(Y, floor_h[lot][None, :]) / floor_h[lot][None, :]
    window = (u < win_w[lot][None, :]) & (v > 0.3) & (v < 0.3 + win_h[lot][None, :] * 0.7) \
        & (Y > 3.0) & (Y < heights[lot][None, :] - 1.0)
    reflect = glass[lot][None, :, :] * (1.0 + 0.5 * cv.blotch[ys, xs, None])
    cv.paint(ys, xs, building, np.where(window[..., None], reflect, wall_rgb), BUILDING)

    hedge = inside & (kinds[lot] == "hedge")[None, :]
    # the hedge top is ragged: leaves poke above and below the nominal height
    hedge &= rows > top_row[None, :] + 4 * cv.blotch[ys, xs] * (cam.f / Zc[None, :]) * 0.1
    leaves = _green(rng, dark=True) * (1 + 0.35 * cv.grain[ys, xs] + 0.25 * cv.blotch[ys, xs])[..., None]
    cv.paint(ys, xs, hedge, leaves, VEGETATION)

    wall = inside & (kinds[lot] == "wall")[None, :]
    cv.paint(ys, xs, wall, _grey(rng, 0.35, 0.8) * shade * texture[..., None], WALL)

    # Fences are see-through meshes; as in Cityscapes the whole panel is labelled 'fence'.
    fence = inside & (kinds[lot] == "fence")[None, :]
    post = np.mod(Zc, rng.uniform(1.5, 2.5))[None, :] < 0.1
    mesh = (np.mod(Y + Zc[None, :] * 0.3, 0.25) < 0.05) | (np.mod(Y - Zc[None, :] * 0.3, 0.25) < 0.05)
    fence_colour = _grey(rng, 0.2, 0.6) * shade * texture[..., None]
    seen_through = cv.rgb[ys, xs] * 0.8
    cv.paint(ys, xs, fence, np.where((post | mesh | (Y > heights[lot][None, :] - 0.1))[..., None],
                                     fence_colour, seen_through), FENCE)


def _street_objects(cam: Camera, lay: StreetLayout, rng):
    """Cars, buses, people, poles with signs or lights, and trees as (Z, draw) pairs."""
    objects = []
    lane_w = (lay.road_right - lay.road_left) / lay.lanes
    for _ in range(int(rng.integers(1, 9))):
        lane = int(rng.integers(lay.lanes))
        X = lay.road_left + (lane + 0.5) * lane_w + rng.uniform(-0.4, 0.4)
        Z = rng.uniform(4.5, min(lay.street_end - 5, 70))
        bus = rng.random() < 0.12
        objects.append((Z, _vehicle(cam, X, Z, bus, rng)))
    for side in (-1, 1):  # parked cars along the kerb
        for _ in range(int(rng.integers(0, 4))):
            X = (lay.road_left + 1.1) if side < 0 else (lay.road_right - 1.1)
            Z = rng.uniform(5, min(lay.street_end - 5, 60))
            objects.append((Z, _vehicle(cam, X, Z, False, rng)))
    for side in (-1, 1):
        a, b = lay.sidewalk_span(side)
        for _ in range(int(rng.integers(1, 8))):
            Z = rng.uniform(3.5, min(lay.street_end - 3, 40))
            objects.append((Z, _person(cam, rng.uniform(a + 0.4, b - 0.4), Z, rng)))
        outer = (a + 0.3) if side < 0 else (b - 0.3)
        for _ in range(int(rng.integers(1, 6))):
            Z = rng.uniform(4, min(lay.street_end - 3, 50))
            objects.append((Z, _pole(cam, outer, Z, rng)))
        if lay.verge[(side + 1) // 2] > 1.0 or rng.random() < 0.3:
            for _ in range(int(rng.integers(0, 4))):
                Z = rng.uniform(5, min(lay.street_end - 3, 70))
                objects.append((Z, _tree(cam, outer + side * 0.6, Z, rng)))
    return objects


def _vehicle(cam: Camera, X, Z, bus, rng):
    width, height = (2.5, 3.2) if bus else (rng.uniform(1.6, 1.95), rng.uniform(1.35, 1.7))
    body, glass = _vehicle_colour(rng), _grey(rng, 0.05, 0.25)
    label = BUS if bus else CAR

    def draw(cv: Canvas):
        s = cam.f / Z                                  # pixels per metre at this depth
        x, yb = cam.project(X, 0, Z)
        hw = width / 2 * s
        # the side facing the camera (right side when the car is left of us), running from
        # the back face toward the vanishing point
        Zf = Z + (11.0 if bus else 4.3)
        xf, ybf = cam.project(X, 0, Zf)
        sf = cam.f / Zf
        facing = 1 if X < 0 else -1
        sx, sxf = x + facing * hw, xf + facing * width / 2 * sf
        side_h = height if bus else 0.62 * height   # the cabin sits on the rear half only
        cv.polygon([(sx, yb), (sx, yb - side_h * s), (sxf, ybf - side_h * sf), (sxf, ybf)],
                   body * 0.75, label, 0.03, 0.05)
        cv.rect(x - hw, yb - 0.95 * height * s if bus else yb - 0.6 * height * s, x + hw, yb,
                body, label, 0.03, 0.05)
        if bus:
            cv.rect(x - hw * 0.9, yb - 0.9 * height * s, x + hw * 0.9, yb - 0.55 * height * s,
                    glass, label, 0.05, 0.1)
        else:  # cabin and rear window
            cv.polygon([(x - hw * 0.9, yb - 0.6 * height * s), (x - hw * 0.7, yb - height * s),
                        (x + hw * 0.7, yb - height * s), (x + hw * 0.9, yb - 0.6 * height * s)],
                       body, label, 0.03, 0.05)
            cv.polygon([(x - hw * 0.78, yb - 0.64 * height * s), (x - hw * 0.62, yb - 0.94 * height * s),
                        (x + hw * 0.62, yb - 0.94 * height * s), (x + hw * 0.78, yb - 0.64 * height * s)],
                       glass, label, 0.05, 0.1)
        for lx in (-0.8, 0.65):  # rear lights
            cv.rect(x + lx * hw, yb - 0.5 * height * s, x + (lx + 0.15) * hw, yb - 0.4 * height * s,
                    (0.7, 0.08, 0.05), label, 0.02, 0.0)
        for wx in (-0.85, 0.6):  # wheels
            cv.rect(x + wx * hw, yb - 0.15 * height * s, x + (wx + 0.25) * hw, yb + 0.02 * s,
                    (0.05, 0.05, 0.05), label, 0.05, 0.0)
    return draw


def _person(cam: Camera, X, Z, rng):
    height = rng.uniform(1.5, 1.95)
    top_c, legs_c = _clothes_colour(rng), _clothes_colour(rng)
    skin = _hsv(rng.uniform(0.03, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.3, 0.85))
    stride = rng.uniform(-0.15, 0.15)

    def draw(cv: Canvas):
        s = cam.f / Z
        x, yb = cam.project(X, 0, Z)
        h = height * s
        for leg in (-1, 1):
            cv.polygon([(x + leg * 0.04 * h, yb - 0.48 * h), (x + leg * 0.11 * h, yb - 0.48 * h),
                        (x + (leg * 0.08 + stride * leg) * h + 0.04 * h, yb),
                        (x + (leg * 0.08 + stride * leg) * h - 0.03 * h, yb)],
                       legs_c, PERSON, 0.05, 0.05)
        cv.ellipse(x, yb - 0.64 * h, 0.13 * h, 0.19 * h, top_c, PERSON, 0.05, 0.05)
        for arm in (-1, 1):
            cv.ellipse(x + arm * 0.14 * h, yb - 0.6 * h, 0.035 * h, 0.16 * h, top_c * 0.9, PERSON)
        cv.ellipse(x, yb - 0.89 * h, 0.065 * h, 0.08 * h, skin, PERSON, 0.03, 0.03)
        cv.ellipse(x, yb - 0.93 * h, 0.066 * h, 0.045 * h, _grey(rng, 0.05, 0.4), PERSON)
    return draw


def _pole(cam: Camera, X, Z, rng):
    height = rng.uniform(3.5, 7.0)
    metal = _grey(rng, 0.25, 0.6)
    kind = rng.choice(["sign", "light", "bare"], p=[0.5, 0.3, 0.2])
    sign_shape = rng.choice(["round", "square", "triangle"])
    sign_colour = [np.array(c, np.float32) for c in
                   ([0.8, 0.1, 0.1], [0.1, 0.25, 0.7], [0.95, 0.8, 0.1], [0.9, 0.9, 0.9])][rng.integers(4)]
    lit = int(rng.integers(3))

    def draw(cv: Canvas):
        s = cam.f / Z
        x, yb = cam.project(X, 0, Z)
        w = max(0.2 * s, 1.5)
        cv.rect(x - w / 2, yb - height * s, x + w / 2, yb, metal, POLE, 0.05, 0.05)
        yt = yb - height * s
        if kind == "sign":
            r = 0.45 * s
            if sign_shape == "round":
                cv.ellipse(x, yt + r, r, r, sign_colour, SIGN, 0.03, 0.03)
            elif sign_shape == "square":
                cv.rect(x - r, yt, x + r, yt + 2 * r, sign_colour, SIGN, 0.03, 0.03)
            else:
                cv.polygon([(x - r, yt), (x + r, yt), (x, yt + 1.7 * r)], sign_colour, SIGN)
        elif kind == "light":
            bw, bh = 0.4 * s, 1.1 * s
            cv.rect(x - bw / 2, yt, x + bw / 2, yt + bh, (0.08, 0.08, 0.07), LIGHT, 0.05, 0.0)
            colour = [(0.9, 0.15, 0.1), (0.95, 0.7, 0.1), (0.2, 0.9, 0.3)][lit]
            cv.ellipse(x, yt + bh * (0.2 + 0.3 * lit), bw * 0.3, bw * 0.3, colour, LIGHT, 0.02, 0.0)
    return draw


def _tree(cam: Camera, X, Z, rng):
    trunk_h, crown_r = rng.uniform(1.5, 3.5), rng.uniform(1.2, 3.0)
    trunk_c = _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.3, 0.6), rng.uniform(0.15, 0.35))
    crown_c = _green(rng) if rng.random() < 0.85 else _hsv(rng.uniform(0.05, 0.12), 0.7, 0.55)
    lobes = rng.uniform(0, 2 * np.pi, 3)

    def draw(cv: Canvas):
        s = cam.f / Z
        x, yb = cam.project(X, 0, Z)
        cv.rect(x - 0.12 * s, yb - (trunk_h + crown_r) * s, x + 0.12 * s, yb, trunk_c, VEGETATION, 0.1, 0.05)
        cx, cy, r = x, yb - (trunk_h + crown_r) * s, crown_r * s
        reg = cv.region(cx - 1.3 * r, cy - 1.3 * r, cx + 1.3 * r, cy + 1.3 * r)
        if reg is None:
            return
        ys, xs, yy, xx = reg
        angle = np.arctan2(yy - cy, xx - cx)
        radius = r * (1 + 0.15 * np.sin(3 * angle + lobes[0]) + 0.1 * np.sin(5 * angle + lobes[1])
                      + 0.15 * cv.blotch[ys, xs])
        mask = np.hypot(xx - cx, yy - cy) < radius
        cv.paint(ys, xs, mask, cv.textured(ys, xs, crown_c, 0.35, 0.2), VEGETATION)
    return draw


def _ego_vehicle(cv: Canvas, rng):
    """The bonnet at the bottom of the frame: Cityscapes 'ego vehicle', ignored in training."""
    depth = rng.uniform(0.06, 0.14) * cv.h
    reg = cv.region(0, cv.h - depth, cv.w, cv.h)
    ys, xs, yy, xx = reg
    top = cv.h - depth * (1 - 0.6 * ((xx - cv.w / 2) / (cv.w / 2)) ** 2)
    colour = _vehicle_colour(rng) * (0.6 + 0.4 * (yy - yy.min()) / max(depth, 1))[..., None]
    cv.paint(ys, xs, yy >= top, colour, EGO)


def finish(cv: Canvas, light) -> np.ndarray:
    """Exposure, white balance, vignetting and sensor noise; returns H×W×3 uint8 sRGB."""
    h, w = cv.h, cv.w
    yy = (np.arange(h, dtype=np.float32) - h / 2)[:, None] / h
    xx = (np.arange(w, dtype=np.float32) - w / 2)[None, :] / w
    vignette = 1.0 - 0.35 * (xx ** 2 + yy ** 2)
    img = cv.rgb * (light["gain"] * vignette)[..., None] * light["tint"]
    img += light["noise"] * np.roll(cv.grain, (7, 13), axis=(0, 1))[..., None]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_scene(seed: int, index: int, height: int = 256, width: int = 512, stream: str = "train"):
    """One street scene: ``(image H×W×3 uint8, label_ids H×W uint8)`` in Cityscapes label ids."""
    rng = rng_for(seed, stream, index)
    cv, _, _, light = render_street(rng, height, width)
    return finish(cv, light), cv.ids.copy()


# ------------------------------------------------------------------------------------------
# Negatives (ADE20K format): man-made objects, indoors
# ------------------------------------------------------------------------------------------

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


# Surfaces of the negatives family: the periodic patterns above, or irregular man-made
# finishes (woven fabric, veined marble, brushed metal), each under one of the room lights.
NEGATIVE_SURFACES = ("periodic", "periodic", "fabric", "marble", "brushed")
NEGATIVE_LIGHTS = ("flat", "ramp", "cylinder")


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
    cylinder light. With periodic flat patterns only (generator version 2) the OOD head
    learned to fire on sharp edges rather than on unfamiliar objects (README, "Negatives").
    """
    rng = rng_for(seed, "negatives", index)
    h, w = int(rng.integers(192, 321)), int(rng.integers(192, 321))
    cv = Canvas(h, w, rng)
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

    for _ in range(int(rng.integers(2, 6))):
        name, class_id, outline, texture = NEGATIVE_KINDS[rng.integers(len(NEGATIVE_KINDS))]
        r = rng.uniform(0.1, 0.3) * min(h, w)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        reg = cv.region(cx - r, cy - r, cx + r, cy + r)
        if reg is None:
            continue
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
    light = {"gain": rng.uniform(0.7, 1.2), "tint": rng.uniform(0.9, 1.1, 3).astype(np.float32),
             "noise": rng.uniform(0.005, 0.02)}
    return finish(cv, light), cv.ids.copy()


# ------------------------------------------------------------------------------------------
# Anomalies (Fishyscapes format): organic, smoothly shaded objects -- never used in training
# ------------------------------------------------------------------------------------------

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
    ang = np.arctan2(yy, xx)
    if kind == "creature":
        body = ((xx / 0.8) ** 2 + ((yy - 0.05) / 0.42) ** 2) <= 1
        head = ((xx - 0.72) / 0.25) ** 2 + ((yy + 0.35) / 0.22) ** 2 <= 1
        legs = np.zeros_like(body)
        for lx in (-0.55, -0.3, 0.3, 0.55):
            legs |= (np.abs(xx - lx) < 0.07) & (yy > 0.2) & (yy < 0.95)
        inside = body | head | legs
        dist = 1 - np.clip((xx / 0.8) ** 2 + ((yy - 0.05) / 0.42) ** 2, 0, 1)
    else:
        k = np.arange(2, 6)[:, None, None]
        amp = rng.uniform(0.03, 0.15, 4)[:, None, None]
        phase = rng.uniform(0, 2 * np.pi, 4)[:, None, None]
        radius = 0.8 * (1 + (amp * np.sin(k * ang[None] + phase)).sum(0))
        if kind == "spotted ball":
            radius = np.full_like(radius, 0.85)
        rho = np.hypot(xx, yy) / radius
        inside = rho <= 1
        dist = 1 - np.clip(rho, 0, 1) ** 2
    # shading: normal of a dome over the outline, lit from the upper left
    nz = np.sqrt(np.clip(dist, 0, 1))
    lightdot = np.clip(0.35 + 0.65 * (nz * 0.7 - xx * 0.3 - yy * 0.4), 0.15, 1.1)
    base = {"stone": _hsv(rng.uniform(0.05, 0.15), rng.uniform(0.05, 0.4), rng.uniform(0.3, 0.8)),
            "creature": _hsv(rng.uniform(0.0, 0.14), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.9)),
            "spotted ball": _hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))}[kind]
    mottle = smooth_noise(rng, s, s, 4, 4)
    rgb = base * (lightdot * (1 + 0.2 * mottle))[..., None]
    if kind == "spotted ball":
        spots = smooth_noise(rng, s, s, 6, 6) > 0.8
        rgb = np.where(spots[..., None], _hsv(rng.random(), 0.8, 0.3) * lightdot[..., None], rgb)
    rgb += 0.35 * np.clip(nz * 0.7 - xx * 0.3 - yy * 0.4 - 0.55, 0, 1)[..., None]  # highlight
    alpha = inside.astype(np.float32)
    alpha[1:-1, 1:-1] = (alpha[1:-1, 1:-1] * 4 + alpha[:-2, 1:-1] + alpha[2:, 1:-1]
                         + alpha[1:-1, :-2] + alpha[1:-1, 2:]) / 8  # 1-px soft edge
    return np.clip(rgb, 0, 1).astype(np.float32), alpha


def render_anomaly_scene(seed: int, index: int, height: int = 256, width: int = 512):
    """A Fishyscapes-Static-format test image.

    Returns ``(image H×W×3 uint8, ood_label H×W uint8, label_ids H×W uint8)`` where
    ood_label is 0 inlier, 1 anomaly, 255 void (ignored Cityscapes ids, e.g. the bonnet),
    and label_ids is the underlying street's Cityscapes label map (anomaly pixels = 0).
    About two thirds of the anomalies stand on the ground at a depth-consistent size (like
    Lost and Found); the rest are pasted anywhere (like Fishyscapes Static).
    """
    from .labels import LABEL_TO_TRAIN, IGNORE_INDEX
    rng = rng_for(seed, "anomalies", index)
    cv, cam, lay, light = render_street(rng, height, width)
    anomaly = np.zeros((height, width), bool)
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.67:   # on the road or sidewalk, sized by depth
            Z = rng.uniform(6, 40)
            X = rng.uniform(lay.road_left - lay.sidewalk[0], lay.road_right + lay.sidewalk[1])
            size_m = rng.uniform(0.4, 1.6)
            x, yb = cam.project(X, 0, Z)
            size = int(np.clip(size_m * cam.f / Z, 12, height * 0.6))
            cx, cy = x, yb - size / 2
        else:                     # anywhere, at any size
            size = int(rng.integers(20, int(height * 0.45)))
            cx, cy = rng.uniform(0, width), rng.uniform(height * 0.2, height * 0.9)
        rgb, alpha = _anomaly_sprite(rng, size)
        x0, y0 = int(round(cx - size / 2)), int(round(cy - size / 2))
        reg = cv.region(x0, y0, x0 + size, y0 + size)
        if reg is None:
            continue
        ys, xs, _, _ = reg
        a = alpha[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
        c = rgb[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
        a = a * (cv.ids[ys, xs] != EGO)          # stays in front of the scene, behind the bonnet
        cv.rgb[ys, xs] = cv.rgb[ys, xs] * (1 - a[..., None]) + c * a[..., None]
        anomaly[ys, xs] |= a >= 0.5
    label_ids = cv.ids.copy()
    label_ids[anomaly] = 0                      # unlabeled in the Cityscapes map
    ood = np.where(LABEL_TO_TRAIN[cv.ids] == IGNORE_INDEX, 255, 0).astype(np.uint8)
    ood[anomaly] = 1
    return finish(cv, light), ood, label_ids


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


# ------------------------------------------------------------------------------------------
# Export: the three trees in their real formats
# ------------------------------------------------------------------------------------------

def cityscapes_stem(split: str, index: int) -> tuple[str, str]:
    """(city, file stem) of image ``index`` of a split: ``{city}_{seq:06d}_{frame:06d}``."""
    cities = CITIES[split]
    city = cities[index % len(cities)]
    k = index // len(cities)
    return city, f"{city}_{k // 30:06d}_{(k % 30) * 19 + 19:06d}"


def _write_png(path: Path, array: np.ndarray):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(array).save(tmp, format="PNG", compress_level=1)
    os.replace(tmp, path)


def _write_jpg(path: Path, array: np.ndarray):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(array).save(tmp, format="JPEG", quality=92)
    os.replace(tmp, path)


def export_files(kind: str, index: int) -> list[str]:
    """The files (relative to the SynthCity root) that image ``index`` of ``kind`` is written to,
    in the order :func:`_export_one` writes them: the one naming rule for writing and removing."""
    if kind in ("train", "val"):
        city, stem = cityscapes_stem(kind, index)
        return [f"cityscapes/leftImg8bit/{kind}/{city}/{stem}_leftImg8bit.png",
                f"cityscapes/gtFine/{kind}/{city}/{stem}_gtFine_labelIds.png"]
    if kind == "negatives":
        name = f"ADE_train_{index + 1:08d}"
        return [f"ade20k/ADEChallengeData2016/images/training/{name}.jpg",
                f"ade20k/ADEChallengeData2016/annotations/training/{name}.png"]
    name = f"synthcity_{index:04d}"
    return [f"fishyscapes/Static/original/{name}.png", f"fishyscapes/Static/labels/{name}.png",
            f"fishyscapes/Static/semantic/{name}_gtFine_labelIds.png"]


def _export_one(job):
    kind, root, seed, index, h, w = job
    paths = [Path(root) / f for f in export_files(kind, index)]
    if kind in ("train", "val"):
        image, ids = render_scene(seed, index, h, w, stream=kind)
        _write_png(paths[0], image)
        _write_png(paths[1], ids)
    elif kind == "negatives":
        image, classes = render_negative(seed, index)
        _write_jpg(paths[0], image)
        _write_png(paths[1], classes)
    else:
        image, ood, ids = render_anomaly_scene(seed, index, h, w)
        for path, array in zip(paths, (image, ood, ids)):
            _write_png(path, array)


# The folders an export creates directly under its root; the marker lists those it made.
TREES = ("cityscapes", "ade20k", "fishyscapes")
KINDS = ("train", "val", "negatives", "anomalies")


class SynthCityConflict(RuntimeError):
    """SynthCity would write into, or remove from, a folder it did not create."""


def export_manifest(prof) -> dict:
    """What an export of the profile's settings writes: the generator and every size."""
    return {"generator": GENERATOR_VERSION, "seed": prof.synthcity_seed, "height": prof.synthcity_height,
            "width": prof.synthcity_width, "train": prof.synthcity_train, "val": prof.synthcity_val,
            "negatives": prof.synthcity_negatives, "anomalies": prof.synthcity_anomaly_test}


def owned_trees(root: Path, marker: dict | None) -> list[str]:
    """The trees under ``root`` this package may write into: those SynthCity made, or none yet.

    A tree folder that exists but is not in the marker's ``made`` list belongs to someone else:
    the export stops instead of mixing its files with theirs. (A marker without ``made``
    predates the list; those exports always made all three trees.)
    """
    made = TREES if marker is not None and "made" not in marker else tuple((marker or {}).get("made", ()))
    foreign = [root / t for t in TREES if (root / t).exists() and t not in made]
    if foreign:
        raise SynthCityConflict(
            f"{foreign[0]} exists and was not written by SynthCity, so it is left as it is. Point "
            f"synthcity_root at a new or empty folder (--set synthcity_root=...), or move that folder away.")
    return [t for t in TREES if t in made]


def remove_export(root: Path, manifest: dict, trees) -> None:
    """Remove exactly the files an earlier export wrote, then the folders it made if they are
    empty: files someone else put among them survive, with the folders that hold them."""
    for kind in KINDS:
        for index in range(manifest.get(kind, 0)):
            for rel in export_files(kind, index):
                (root / rel).unlink(missing_ok=True)
    for tree in trees:
        for folder in sorted((p for p in (root / tree).rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()
        if (root / tree).is_dir() and not any((root / tree).iterdir()):
            (root / tree).rmdir()


def export(root=None, profile="quick", workers: int | None = None, progress: bool = True) -> Path:
    """Write the SynthCity trees under ``root`` (default: the profile's ``synthcity_root``).

    Layout (all formats as the real datasets ship them)::

        root/cityscapes/leftImg8bit/{train,val}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
        root/cityscapes/gtFine/{train,val}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png
        root/ade20k/ADEChallengeData2016/images/training/ADE_train_XXXXXXXX.jpg
        root/ade20k/ADEChallengeData2016/annotations/training/ADE_train_XXXXXXXX.png
        root/fishyscapes/Static/original/synthcity_XXXX.png   RGB
        root/fishyscapes/Static/labels/synthcity_XXXX.png     0 inlier, 1 anomaly, 255 void
        root/fishyscapes/Static/semantic/synthcity_XXXX_gtFine_labelIds.png  (extra: the street)
        root/synthcity.json    the settings, and which of the three folders the export made

    A finished export is recognised by ``synthcity.json`` and not redone unless its settings
    (or the generator version) differ; then exactly the files the old export wrote are removed
    (:func:`export_files` names them) before the new ones are written. Nothing is written into,
    or removed from, a folder SynthCity did not make (:class:`SynthCityConflict`). The marker
    is written last, so an interrupted export is completed by the next call. Images are
    rendered in parallel (``workers`` processes).
    """
    from ..config import Profile, load_profile
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    root = Path(root) if root is not None else prof.path("synthcity_root")
    manifest, marker = export_manifest(prof), root / "synthcity.json"
    old = json.loads(marker.read_text()) if marker.exists() else None
    if old is not None and {k: v for k, v in old.items() if k != "made"} == manifest:
        return root
    owned = owned_trees(root, old)
    made = sorted(set(owned) | {t for t in TREES if not (root / t).exists()})
    if old is not None:  # other settings or an older generator: take the old export away first
        marker.unlink()
        remove_export(root, old, owned)
    jobs = [(kind, str(root), prof.synthcity_seed, i, prof.synthcity_height, prof.synthcity_width)
            for kind in KINDS for i in range(manifest[kind])]
    print(f"SynthCity: writing {len(jobs)} images under {root}")  # a command wrote data: say where
    _render_all(jobs, workers or min(os.cpu_count() or 1, 8), progress, root)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(manifest | {"made": made}, indent=2))
    os.replace(tmp, marker)
    return root


def _render_all(jobs, workers: int, progress: bool, root: Path) -> None:
    """Render and write every job, in ``workers`` processes, with a progress bar."""
    from tqdm.auto import tqdm
    bar = tqdm(total=len(jobs), desc=f"SynthCity -> {root}", disable=not progress, unit="img")
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for _ in pool.map(_export_one, jobs, chunksize=16):
                bar.update()
    else:
        for job in jobs:
            _export_one(job)
            bar.update()
    bar.close()


def uses_synthcity(profile) -> bool:
    """Whether the profile reads any of its three datasets from under ``synthcity_root``: only
    then does a command need SynthCity, and write it when it is missing."""
    if not profile.use_synthcity:
        return False
    root = profile.path("synthcity_root").resolve()
    return any(profile.path(name).resolve().is_relative_to(root)
               for name in ("cityscapes_root", "ade20k_root", "fishyscapes_root"))


def ensure(profile, progress: bool = True) -> None:
    """Write SynthCity for a command that reads it (:func:`uses_synthcity`) and finds it missing
    or stale; a profile that reads only real datasets is left alone."""
    if uses_synthcity(profile):
        export(profile=profile, progress=progress)

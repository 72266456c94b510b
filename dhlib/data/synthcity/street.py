"""The street itself: its layout in world metres, the sky, the ground plane (road, sidewalks,
verges), the far backdrop and the rows of facades, hedges, walls and fences.

Colours are drawn from overlapping families (grey asphalt, grey paving, grey concrete,
white clouds, white facades...) so that a pixel's colour alone does not tell its class.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..labels import LABEL_ID
from .camera import Camera
from .canvas import Canvas, _grey, _hsv

# Label ids (the on-disk Cityscapes ids, not train ids) used by SynthCity.
ROAD, SIDEWALK, BUILDING, WALL, FENCE = (LABEL_ID[n] for n in
                                         ("road", "sidewalk", "building", "wall", "fence"))
POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = (LABEL_ID[n] for n in (
    "pole", "traffic light", "traffic sign", "vegetation", "terrain", "sky"))
PERSON, CAR, BUS, EGO = (LABEL_ID[n] for n in ("person", "car", "bus", "ego vehicle"))


def _facade_colour(rng):
    kind = rng.integers(4)
    if kind == 0:
        return _grey(rng, 0.35, 0.85)                                   # concrete / render
    if kind == 1:
        return _hsv(rng.uniform(0.02, 0.08), rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.6))  # brick
    if kind == 2:
        return _hsv(rng.uniform(0.08, 0.15), rng.uniform(0.15, 0.4), rng.uniform(0.6, 0.9))   # sandstone
    return _hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.35), rng.uniform(0.4, 0.85))          # painted


def _green(rng, dark=False):
    return _hsv(rng.uniform(0.18, 0.33), rng.uniform(0.3, 0.75),
                rng.uniform(0.12, 0.3) if dark else rng.uniform(0.25, 0.55))


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


def random_layout(rng: np.random.Generator) -> StreetLayout:
    """A street of 2-4 lanes, off-centre under the camera, with its own sidewalks and verges."""
    lanes = int(rng.integers(2, 5))
    lane_w = rng.uniform(2.8, 3.6)
    road_left = -rng.uniform(0.3, 0.7) * lanes * lane_w
    return StreetLayout(road_left, road_left + lanes * lane_w, lanes,
                        (rng.uniform(1.8, 4.5), rng.uniform(1.8, 4.5)),
                        tuple(rng.uniform(0, 3.0, 2) * (rng.random(2) < 0.5)),
                        street_end=rng.uniform(45, 160))


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


# ------------------------------------------------------------------------------------------
# The ground plane
# ------------------------------------------------------------------------------------------

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
    _sidewalks(cv, lay, ys, xs, X, Z, rng)
    _road(cv, lay, ys, xs, X, Z, rng)
    if light["sunny"]:
        _street_shadow(cv, lay, ys, xs, X, Z, rng, light["sun_side"])


def _sidewalks(cv: Canvas, lay: StreetLayout, ys, xs, X, Z, rng):
    """Tiled paving on both sides, its outer edge raised into a brighter kerb."""
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


def _road(cv: Canvas, lay: StreetLayout, ys, xs, X, Z, rng):
    """Asphalt with painted lane, edge and zebra marks, all labelled road."""
    asphalt = _grey(rng, 0.18, 0.45)
    on_road = (X >= lay.road_left) & (X < lay.road_right)
    colour = cv.textured(ys, xs, asphalt, 0.12, 0.15)
    paint_colour = np.array([0.9, 0.9, 0.85] if rng.random() < 0.8 else [0.9, 0.8, 0.3], np.float32)
    marks = _road_marks(lay, X, Z, on_road, rng)
    colour = np.where(marks[..., None], paint_colour * (0.9 + 0.1 * cv.grain[ys, xs, None]), colour)
    cv.paint(ys, xs, on_road, colour, ROAD)


def _road_marks(lay: StreetLayout, X, Z, on_road, rng):
    lane_w = (lay.road_right - lay.road_left) / lay.lanes
    marks = np.zeros_like(on_road)
    for k in range(1, lay.lanes):
        dash = np.mod(Z + rng.uniform(0, 9), 9.0) < 3.0
        marks |= (np.abs(X - (lay.road_left + k * lane_w)) < 0.08) & dash
    for edge in (lay.road_left + 0.3, lay.road_right - 0.3):
        marks |= np.abs(X - edge) < 0.07
    if rng.random() < 0.25:  # a zebra crossing
        zc = rng.uniform(6, 25)
        marks |= (np.abs(Z - zc) < 2.0) & (np.mod(X, 1.0) < 0.5)
    return marks


def _street_shadow(cv: Canvas, lay: StreetLayout, ys, xs, X, Z, rng, s: int):
    """The shadow of one row of buildings falls across part of the street."""
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


# ------------------------------------------------------------------------------------------
# The facades along both sides
# ------------------------------------------------------------------------------------------

@dataclass
class _FacadeStrip:
    """The rows and columns one side's facade plane covers, with each column's lot."""
    ys: slice
    xs: slice
    rows: np.ndarray      # pixel-centre rows, a column vector
    Zc: np.ndarray        # depth of each column (1 where the plane is not visible)
    Y: np.ndarray         # height on the plane of each pixel
    inside: np.ndarray    # pixels the plane's lots cover
    lot: np.ndarray       # the lot of each column
    top_row: np.ndarray   # first row of each column's lot
    starts: list          # Z where each lot begins
    kinds: np.ndarray     # building, hedge, wall or fence, per lot
    heights: np.ndarray   # metres, per lot


def _facades(cv: Canvas, cam: Camera, lay: StreetLayout, side: int, rng, light):
    """The row of buildings (and hedges, walls, fences) on one side of the street.

    Facades are vertical planes X = B. A column x sees the plane at depth
    ``Z = f·B/(x − vx)``; a point at height Y on it is at row ``horizon + f·(cam_h − Y)/Z``.
    The street is cut along Z into lots, each a building of its own height, colour and
    window grid, or a hedge, or a low wall/fence in front of a grass lot.
    """
    columns = _facade_columns(cv, cam, lay, side)
    if columns is None:
        return
    xs, Z, visible = columns
    strip = _facade_strip(cv, cam, xs, Z, visible, _lots(rng, lay.street_end))
    if strip is None:
        return
    shade = 0.7 if (light["sunny"] and side == light["sun_side"]) else 1.0
    texture = 1.0 + 0.05 * cv.grain[strip.ys, xs] + 0.12 * cv.blotch[strip.ys, xs]
    _buildings(cv, strip, shade, texture, rng)
    _hedges(cv, cam, strip, rng)
    _walls(cv, strip, shade, texture, rng)
    _fences(cv, strip, shade, texture, rng)


def _facade_columns(cv: Canvas, cam: Camera, lay: StreetLayout, side: int):
    """The image columns on one side of the vanishing point, each column's depth on the
    facade plane, and which of them see the plane before the street ends; None if none do."""
    B = lay.facade_x(side)
    if side < 0:
        xs = slice(0, max(0, min(cv.w, int(cam.vx))))
    else:
        xs = slice(min(cv.w, max(0, int(math.ceil(cam.vx)))), cv.w)
    if xs.stop <= xs.start:
        return None
    x = np.arange(xs.start, xs.stop, dtype=np.float32) + 0.5
    with np.errstate(divide="ignore"):
        Z = cam.f * B / (x - cam.vx)                         # per column
    visible = (Z > 0.5) & (Z < lay.street_end)
    if not visible.any():
        return None
    return xs, Z, visible


def _lots(rng, street_end: float):
    """Lots along the street: [start, end) in Z with their own kind and height."""
    starts = [0.0]
    while starts[-1] < street_end:
        starts.append(starts[-1] + rng.uniform(8, 35))
    n = len(starts) - 1
    kinds = rng.choice(["building", "hedge", "wall", "fence"], n, p=[0.64, 0.12, 0.12, 0.12])
    heights = np.where(kinds == "building", rng.uniform(7, 28, n),
                       np.where(kinds == "hedge", rng.uniform(1.2, 4.0, n), rng.uniform(1.0, 2.5, n)))
    return starts, kinds, heights


def _facade_strip(cv: Canvas, cam: Camera, xs, Z, visible, lots):
    """Where each column's lot stands in the image; None when it covers no row."""
    starts, kinds, heights = lots
    n = len(starts) - 1
    lot = np.clip(np.searchsorted(starts, np.where(visible, Z, 0), side="right") - 1, 0, n - 1)
    Zc = np.where(visible, Z, 1.0)
    top_row = cam.horizon + cam.f * (cam.cam_h - heights[lot]) / Zc
    base_row = cam.horizon + cam.f * cam.cam_h / Zc

    # Only the rows that some visible lot covers need any work.
    r0 = int(np.clip(np.floor(top_row[visible].min()) - 4, 0, cv.h))
    r1 = int(np.clip(np.ceil(base_row[visible].max()), 0, cv.h))
    if r1 <= r0:
        return None
    rows = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
    Y = cam.cam_h - (rows - cam.horizon) * Zc[None, :] / cam.f    # height on the plane
    inside = visible[None, :] & (rows >= top_row[None, :]) & (rows < base_row[None, :])
    return _FacadeStrip(slice(r0, r1), xs, rows, Zc, Y, inside, lot, top_row, starts, kinds, heights)


def _buildings(cv: Canvas, strip: _FacadeStrip, shade: float, texture, rng):
    """Wall colour, then windows where (u mod pitch, Y mod storey) fall in the pane."""
    ys, xs, lot, Y = strip.ys, strip.xs, strip.lot, strip.Y
    n = len(strip.starts) - 1
    colours = np.stack([_facade_colour(rng) for _ in range(n)]) * shade
    pitch = rng.uniform(2.0, 4.0, n)       # window spacing along the street
    floor_h = rng.uniform(2.8, 3.6, n)     # storey height
    win_w, win_h = rng.uniform(0.3, 0.7, n), rng.uniform(0.35, 0.65, n)
    glass = np.stack([_grey(rng, 0.05, 0.45) * np.array([0.9, 0.95, 1.1], np.float32) for _ in range(n)])

    building = strip.inside & (strip.kinds[lot] == "building")[None, :]
    wall_rgb = colours[lot][None, :, :] * texture[..., None]
    u = np.mod(strip.Zc - np.asarray(strip.starts)[lot], pitch[lot])[None, :] / pitch[lot][None, :]
    v = np.mod(Y, floor_h[lot][None, :]) / floor_h[lot][None, :]
    window = (u < win_w[lot][None, :]) & (v > 0.3) & (v < 0.3 + win_h[lot][None, :] * 0.7) \
        & (Y > 3.0) & (Y < strip.heights[lot][None, :] - 1.0)
    reflect = glass[lot][None, :, :] * (1.0 + 0.5 * cv.blotch[ys, xs, None])
    cv.paint(ys, xs, building, np.where(window[..., None], reflect, wall_rgb), BUILDING)


def _hedges(cv: Canvas, cam: Camera, strip: _FacadeStrip, rng):
    ys, xs = strip.ys, strip.xs
    hedge = strip.inside & (strip.kinds[strip.lot] == "hedge")[None, :]
    # the hedge top is ragged: leaves poke above and below the nominal height
    hedge &= strip.rows > strip.top_row[None, :] + 4 * cv.blotch[ys, xs] * (cam.f / strip.Zc[None, :]) * 0.1
    leaves = _green(rng, dark=True) * (1 + 0.35 * cv.grain[ys, xs] + 0.25 * cv.blotch[ys, xs])[..., None]
    cv.paint(ys, xs, hedge, leaves, VEGETATION)


def _walls(cv: Canvas, strip: _FacadeStrip, shade: float, texture, rng):
    wall = strip.inside & (strip.kinds[strip.lot] == "wall")[None, :]
    cv.paint(strip.ys, strip.xs, wall, _grey(rng, 0.35, 0.8) * shade * texture[..., None], WALL)


def _fences(cv: Canvas, strip: _FacadeStrip, shade: float, texture, rng):
    """Fences are see-through meshes; as in Cityscapes the whole panel is labelled 'fence'."""
    ys, xs, Zc, Y = strip.ys, strip.xs, strip.Zc, strip.Y
    fence = strip.inside & (strip.kinds[strip.lot] == "fence")[None, :]
    post = np.mod(Zc, rng.uniform(1.5, 2.5))[None, :] < 0.1
    mesh = (np.mod(Y + Zc[None, :] * 0.3, 0.25) < 0.05) | (np.mod(Y - Zc[None, :] * 0.3, 0.25) < 0.05)
    fence_colour = _grey(rng, 0.2, 0.6) * shade * texture[..., None]
    seen_through = cv.rgb[ys, xs] * 0.8
    cv.paint(ys, xs, fence, np.where((post | mesh | (Y > strip.heights[strip.lot][None, :] - 0.1))[..., None],
                                     fence_colour, seen_through), FENCE)

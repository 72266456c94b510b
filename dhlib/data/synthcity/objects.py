"""Things on the street: cars and buses on the road, people on the sidewalks, poles with
signs or traffic lights, trees, and the ego vehicle's bonnet.

Each object is placed in world metres and returned as a ``(Z, draw)`` pair, so the scene can
paint far objects first and let near ones occlude them (painter's order).
"""
from __future__ import annotations

import numpy as np

from .camera import Camera
from .canvas import Canvas, _grey, _hsv
from .street import BUS, CAR, EGO, LIGHT, PERSON, POLE, SIGN, VEGETATION, StreetLayout, _green


def _vehicle_colour(rng):
    if rng.random() < 0.6:
        return _grey(rng, 0.05, 0.9)                          # black, grey, silver, white
    return _hsv(rng.uniform(0, 1), rng.uniform(0.4, 0.9), rng.uniform(0.25, 0.8))


def _clothes_colour(rng):
    if rng.random() < 0.5:
        return _grey(rng, 0.05, 0.7)
    return _hsv(rng.uniform(0, 1), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8))


def _street_objects(cam: Camera, lay: StreetLayout, rng):
    """Cars, buses, people, poles with signs or lights, and trees as (Z, draw) pairs."""
    objects = _traffic(cam, lay, rng)
    for side in (-1, 1):
        objects += _pavement_objects(cam, lay, side, rng)
    return objects


def _traffic(cam: Camera, lay: StreetLayout, rng):
    """Cars and buses in the lanes, then cars parked along both kerbs."""
    objects = []
    lane_w = (lay.road_right - lay.road_left) / lay.lanes
    for _ in range(int(rng.integers(1, 9))):
        lane = int(rng.integers(lay.lanes))
        X = lay.road_left + (lane + 0.5) * lane_w + rng.uniform(-0.4, 0.4)
        Z = rng.uniform(4.5, min(lay.street_end - 5, 70))
        bus = rng.random() < 0.12
        objects.append((Z, _vehicle(cam, X, Z, bus, rng)))
    for side in (-1, 1):
        for _ in range(int(rng.integers(0, 4))):
            X = (lay.road_left + 1.1) if side < 0 else (lay.road_right - 1.1)
            Z = rng.uniform(5, min(lay.street_end - 5, 60))
            objects.append((Z, _vehicle(cam, X, Z, False, rng)))
    return objects


def _pavement_objects(cam: Camera, lay: StreetLayout, side: int, rng):
    """People on one sidewalk, poles along its outer edge, and trees where there is a verge."""
    objects = []
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
        _vehicle_back(cv, x, yb, hw, height, s, bus, body, glass, label)
    return draw


def _vehicle_back(cv: Canvas, x, yb, hw, height, s, bus, body, glass, label):
    """Windows, rear lights and wheels on the back face, ``s`` pixels per metre."""
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
            _sign(cv, x, yt, 0.45 * s, sign_shape, sign_colour)
        elif kind == "light":
            _traffic_light(cv, x, yt, s, lit)
    return draw


def _sign(cv: Canvas, x, yt, r, shape, colour):
    """A round, square or triangular sign of half-width ``r`` hanging from the pole top ``yt``."""
    if shape == "round":
        cv.ellipse(x, yt + r, r, r, colour, SIGN, 0.03, 0.03)
    elif shape == "square":
        cv.rect(x - r, yt, x + r, yt + 2 * r, colour, SIGN, 0.03, 0.03)
    else:
        cv.polygon([(x - r, yt), (x + r, yt), (x, yt + 1.7 * r)], colour, SIGN)


def _traffic_light(cv: Canvas, x, yt, s, lit: int):
    """A dark box at the pole top with one of its three lamps lit (0 red, 1 amber, 2 green)."""
    bw, bh = 0.4 * s, 1.1 * s
    cv.rect(x - bw / 2, yt, x + bw / 2, yt + bh, (0.08, 0.08, 0.07), LIGHT, 0.05, 0.0)
    colour = [(0.9, 0.15, 0.1), (0.95, 0.7, 0.1), (0.2, 0.9, 0.3)][lit]
    cv.ellipse(x, yt + bh * (0.2 + 0.3 * lit), bw * 0.3, bw * 0.3, colour, LIGHT, 0.02, 0.0)


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

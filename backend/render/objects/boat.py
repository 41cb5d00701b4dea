"""Boats on the water: sailboats, or paper boats when the prompt says so."""

from __future__ import annotations

import numpy as np

from backend.render.canvas import Scene, Slots, mix
from backend.render.objects.placement import body, dark_out, object_count, side_shade
from backend.render.objects.sprite import Sprite, glow


def paint_boat(scene: Scene) -> None:
    rng = scene.rng("obj-boat")
    slots = Slots()
    n = object_count(scene, "boat", 1, (2, 4), rng)
    words = scene.spec.words
    paper = "paper" in words or "origami" in words
    big = bool(words & {"ship", "ships", "galleon", "schooner", "ferry"})
    hz = scene.horizon
    bottom = float(scene.shore_line.min()) - scene.unit * 0.04 if scene.shore_line is not None else scene.h * 0.95
    specs = []
    for i in range(n):
        t = rng.uniform(0.45, 0.8) if i == 0 else rng.uniform(0.08, 0.4)
        y = hz + (bottom - hz) * t
        size = scene.unit * (0.05 + 0.3 * t) * (1.4 if big else 1.0) * (1.3 if paper else 1.0)
        x = slots.pick(rng, scene, size * 0.7, 0.18, 0.82)
        specs.append((y, x, size, t))
    for y, x, size, t in sorted(specs):
        if paper:
            draw_paper_boat(scene, x, y, size * 0.55, rng, 0.6 + 0.4 * t)
        else:
            draw_sailboat(scene, x, y, size, rng, 0.6 + 0.4 * t, big)


def draw_paper_boat(scene: Scene, x: float, y: float, size: float, rng: np.random.Generator, depth: float) -> None:
    sp = Sprite(scene, x - size, y - size * 0.9, x + size, y + size * 0.2)
    paper = body(scene, (0.98, 0.97, 0.93)) * 1.15  # paper catches whatever light there is
    paper = np.maximum(paper, mix(scene.spec.palette.haze, (1, 1, 1), 0.3) * 0.95)
    h = size * 0.32
    # hull: a trapezoid; sail: the tall folded triangle, its sunny half brighter
    sp.poly([(x - size, y - h), (x + size, y - h), (x + size * 0.62, y), (x - size * 0.62, y)], paper * 0.8)
    sp.poly([(x - size * 0.62, y - h), (x + size * 0.62, y - h), (x, y - h * 0.2)], paper * 0.62)
    sp.poly([(x - size * 0.5, y - h), (x, y - size * 0.85), (x, y - h)], paper * (1.05 if scene.sun_left else 0.7))
    sp.poly([(x, y - h), (x, y - size * 0.85), (x + size * 0.5, y - h)], paper * (0.7 if scene.sun_left else 1.05))
    sp.commit(depth, reflect_at=y)


def draw_sailboat(scene: Scene, x: float, y: float, size: float, rng: np.random.Generator, depth: float, big: bool) -> None:
    sp = Sprite(scene, x - size, y - size * 1.3, x + size, y + size * 0.15)
    hull = body(scene, (0.25, 0.18, 0.14) if big else (0.85, 0.85, 0.82))
    sail = body(scene, (0.95, 0.93, 0.86))
    facing = 1 if rng.random() < 0.5 else -1
    L, H = size * (0.7 if big else 0.5), size * 0.09
    sp.poly([(x - L, y - H * 1.4), (x + L, y - H * 1.6), (x + L * 0.8, y), (x - L * 0.75, y)], side_shade(scene, hull, x, L))
    dark = body(scene, (0.12, 0.1, 0.09))
    masts = (-0.45, 0.05, 0.5) if big else (0.0,)
    for k, m in enumerate(masts):
        mx = x + L * m * facing
        mh = size * (1.05 if big and k == 1 else 0.85 if big else 1.0)
        sp.line([(mx, y - H), (mx, y - mh)], max(1.0, size * 0.012), dark)
        if big:  # square sails, billowing
            for j in range(3):
                top = y - mh + mh * 0.08 + j * mh * 0.28
                wdt = size * (0.22 - 0.03 * j)
                sp.poly([(mx - wdt, top), (mx + wdt, top), (mx + wdt * 1.05, top + mh * 0.22),
                         (mx - wdt * 1.05, top + mh * 0.22)], side_shade(scene, sail, mx, wdt))  # fmt: skip
        else:  # main sail and jib
            sp.poly([(mx + facing * size * 0.02, y - mh), (mx + facing * size * 0.02, y - H * 2),
                     (mx - facing * size * 0.5, y - H * 2)],
                    side_shade(scene, sail, mx - facing * size * 0.25, size * 0.25))  # fmt: skip
            sp.poly([(mx + facing * size * 0.04, y - mh * 0.92), (mx + facing * size * 0.42, y - H * 1.8),
                     (mx + facing * size * 0.04, y - H * 1.8)],
                    side_shade(scene, sail, mx + facing * size * 0.2, size * 0.2))  # fmt: skip
    sp.commit(depth, reflect_at=y)
    if dark_out(scene):
        glow(scene, x + facing * L * 0.6, y - H * 2, size * 0.02 + 1, (1.0, 0.8, 0.5), 0.9)

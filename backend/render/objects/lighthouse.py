"""A lighthouse on its rock, with its beam after dark."""

from __future__ import annotations

import numpy as np

from backend.render.canvas import F32, Scene, int_hash, lit, smoothstep
from backend.render.objects.placement import body, dark_out, side_shade
from backend.render.objects.sprite import Sprite, glow


def paint_lighthouse(scene: Scene) -> None:
    rng, p = scene.rng("obj-lighthouse"), scene.spec.palette
    u, hz = scene.unit, scene.horizon
    left = rng.random() < 0.5
    height = u * rng.uniform(0.26, 0.32)
    # a dark headland of basalt rising from the water on one side
    lip = scene.w * rng.uniform(0.24, 0.34)
    top = hz - u * rng.uniform(0.04, 0.09)
    foot_y = hz + (scene.h - hz) * rng.uniform(0.3, 0.45)
    bumps = rng.uniform(-1, 1, 8) * u * 0.012
    edge_x = -u * 0.05
    pts = [(edge_x, top - u * 0.03 + bumps[0])]
    for k in range(1, 7):
        pts.append((lip * k / 7, top + bumps[k] - u * 0.03 * (1 - k / 7)))
    face = [(lip, top + u * 0.01), (lip + u * 0.02, top + u * 0.06), (lip + u * 0.035, top + u * 0.07),
            (lip + u * 0.05, (top + foot_y) / 2), (lip + u * 0.075, (top + foot_y) / 2 + u * 0.02),
            (lip + u * 0.09, foot_y), (lip + u * 0.14, scene.h + 2)]  # fmt: skip
    pts += [*face, (edge_x, scene.h + 2)]
    if not left:
        pts = [(scene.w - x, y) for x, y in pts]
    x0 = min(x for x, _ in pts)
    x1 = max(x for x, _ in pts) + u * 0.08
    y0 = min(y for _, y in pts) - height - u * 0.02
    sp = Sprite(scene, x0 if left else x0 - u * 0.08, y0, x1 if left else scene.w, scene.h, ss=2)
    rock = body(scene, (0.38, 0.36, 0.38), 1.0)
    lip_x = scene.w - lip if not left else lip
    sign = 1 if left else -1
    col_w = u * 0.016
    salt = int(rng.integers(0, 1 << 16))

    # columns of basalt, each its own tone, darker joints between them, darker below
    def basalt(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        idx = np.floor(X / col_w).astype(np.int32)
        tone = 0.72 + 0.4 * int_hash(idx, salt)
        frac = X / col_w - idx
        joint = 1 - 0.45 * np.exp(-((np.minimum(frac, 1 - frac) / 0.08) ** 2))
        lit_side = 1.0 + 0.15 * (frac - 0.5) * (-1 if scene.sun_left else 1)
        depth = 1.15 - 0.55 * np.clip((Y - top) / (scene.h - top), 0, 1)
        k = tone * joint * lit_side * depth
        return rock * np.broadcast_to(k, np.broadcast(X, Y).shape)[..., None]

    sp.poly(pts, basalt)
    grass = body(scene, (0.36, 0.44, 0.2), 0.95)
    cap = pts[:8] + [(x, y + u * 0.014) for x, y in pts[:8][::-1]]
    sp.poly(cap, side_shade(scene, grass, lip_x, u * 0.3))
    # foam: short wisps where the waves break against the cliff's foot (on water only, not on a beach)
    white = lit((1, 1, 1), scene) * (0.6 if scene.spec.light == "night" else 1.0) + 0.05
    shore = scene.shore_line
    for _ in range(14):
        t = rng.uniform(0, 1) ** 1.5
        fy = foot_y + (scene.h - foot_y) * t
        fx = lip_x + sign * (u * 0.09 + u * 0.05 * t + rng.uniform(-0.005, 0.03) * u)
        if shore is not None and fy > shore[int(np.clip(fx, 0, scene.w - 1))] - 2:
            continue
        length = u * rng.uniform(0.02, 0.05) * (0.5 + t)
        sp.line([(fx, fy), (fx + sign * length, fy + rng.uniform(-1, 1))], u * (0.002 + 0.003 * t), white, 0.6)
    # the tower: tapered, banded red and white, a gallery, a lantern and a dome
    tx = lip_x - (1 if left else -1) * u * rng.uniform(0.06, 0.12)
    crest = sorted(pts[:9])
    base = float(np.interp(tx, [x for x, _ in crest], [y for _, y in crest])) + u * 0.004
    bw, tw = u * 0.032, u * 0.02
    ttop = base - height * 0.78
    white, red = body(scene, (0.92, 0.9, 0.86)), body(scene, (0.75, 0.12, 0.1))
    sp.poly([(tx - bw, base), (tx + bw, base), (tx + tw, ttop), (tx - tw, ttop)], side_shade(scene, white, tx, bw))
    for k in range(3):
        a, b = 0.12 + 0.27 * k, 0.25 + 0.27 * k
        ya, yb = base - (base - ttop) * a, base - (base - ttop) * b
        wa, wb = bw + (tw - bw) * a, bw + (tw - bw) * b
        sp.poly([(tx - wa, ya), (tx + wa, ya), (tx + wb, yb), (tx - wb, yb)], side_shade(scene, red, tx, wa))
    dark = body(scene, (0.15, 0.15, 0.17))
    sp.rect(tx - tw * 1.5, ttop - u * 0.006, tx + tw * 1.5, ttop + u * 0.004, dark)
    lamp_top = ttop - height * 0.13
    night = dark_out(scene) or scene.spec.weather == "fog" or scene.spec.light == "dawn"
    lamp = np.asarray((1.0, 0.9, 0.6), F32) * (1.6 if night else 1.0)
    sp.rect(tx - tw * 0.85, lamp_top, tx + tw * 0.85, ttop - u * 0.006, lamp if night else body(scene, (0.5, 0.55, 0.6)))
    for at in (-0.85, 0, 0.85):
        sp.line([(tx + tw * at, lamp_top), (tx + tw * at, ttop - u * 0.006)], u * 0.0025, dark)
    sp.poly([(tx - tw * 1.1, lamp_top), (tx + tw * 1.1, lamp_top), (tx, lamp_top - height * 0.07)], red * 0.8)
    # a keeper's cottage at its foot
    hx = tx + (1 if left else -1) * u * 0.06
    sp.rect(hx - u * 0.035, base - u * 0.035, hx + u * 0.035, base + u * 0.01, side_shade(scene, white, hx, u * 0.035, False))
    sp.poly([(hx - u * 0.042, base - u * 0.033), (hx + u * 0.042, base - u * 0.033), (hx, base - u * 0.06)], red * 0.75)
    sp.commit(0.8, reflect_at=foot_y)
    ly = (lamp_top + ttop) / 2
    if night:
        glow(scene, hx, base - u * 0.012, u * 0.006, p.accents[0], 1.0)
        paint_beam(scene, tx, ly, left, u)
        glow(scene, tx, ly, u * 0.02, (1.0, 0.9, 0.65), 1.2)
    else:
        glow(scene, tx, ly, u * 0.012, (1.0, 0.9, 0.65), 0.35)


def paint_beam(scene: Scene, x: float, y: float, left: bool, u: float) -> None:
    """A pale wedge of light swept out over the sea, fading with distance."""
    direction = 1 if left else -1  # toward the open sea, the frame's middle
    x0, x1 = (int(x), scene.w) if direction > 0 else (0, int(x) + 1)
    y0, y1 = max(0, int(y - u * 0.35)), min(scene.h, int(y + u * 0.25))
    dx = (scene.xs[:, x0:x1] - x) * direction
    dy = scene.ys[y0:y1] - y
    ang = np.arctan2(dy, np.maximum(dx, 1e-3)) + 0.06  # aimed a touch above level
    spread = 0.05 + 0.0
    dist = np.hypot(dx, dy) / u
    beam = np.exp(-((ang / spread) ** 2)) * np.exp(-dist / 0.7) * (dx > 0) * smoothstep(0.0, 0.03, dist)
    beam = beam * 0.55
    scene.img[y0:y1, x0:x1] += beam[..., None] * np.asarray((1.0, 0.92, 0.72), F32)

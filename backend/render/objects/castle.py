"""A castle on a hill, a shore or an islet."""

from __future__ import annotations

import numpy as np

from backend.render.canvas import F32, Scene
from backend.render.objects.placement import body, dark_out, ground_spot, islet, on_water, side_shade
from backend.render.objects.sprite import Sprite, glow


def paint_castle(scene: Scene) -> None:
    rng = scene.rng("obj-castle")
    u = scene.unit
    size = u * rng.uniform(0.18, 0.24)
    x, base, depth = ground_spot(scene, rng, scene.slots, size * 0.9, (0.15, 0.35))
    if on_water(scene) and scene.shore_line is None:
        size *= 0.8
    sp = Sprite(scene, x - size * 1.2, base - size * 1.6, x + size * 1.2, base + size * 0.2)
    stone = body(scene, (0.62, 0.58, 0.52), 0.95)
    roof = body(scene, (0.28, 0.2, 0.32) if scene.spec.light != "day" else (0.35, 0.25, 0.4))
    if on_water(scene) and scene.shore_line is None:
        islet(sp, scene, x, base, size * 1.25)
    wall_top = base - size * 0.42
    sp.rect(x - size, wall_top, x + size, base + size * 0.05, side_shade(scene, stone, x, size, False))
    merlon = size * 0.09
    for k in np.arange(-size, size, merlon * 2):
        sp.rect(x + k, wall_top - merlon, x + k + merlon, wall_top + 1, stone)
    windows = []
    towers = [(-1.0, 0.75, 0.14), (1.0, 0.75, 0.14), (-0.35, 1.1, 0.2), (0.3, 0.95, 0.16)]
    for fx, fh, fw in towers:
        tx, tw, th = x + fx * size, size * fw, size * fh * rng.uniform(0.9, 1.15)
        sp.rect(tx - tw, base - th, tx + tw, base + size * 0.05, side_shade(scene, stone, tx, tw))
        sp.poly([(tx - tw * 1.25, base - th + 1), (tx + tw * 1.25, base - th + 1), (tx, base - th - tw * 2.6)],
                side_shade(scene, roof, tx, tw * 1.2))  # fmt: skip
        windows.append((tx, base - th * 0.7, tw * 0.28))
    sp.poly([(x - size * 0.12, base + 1), (x - size * 0.12, base - size * 0.18), (x, base - size * 0.26),
             (x + size * 0.12, base - size * 0.18), (x + size * 0.12, base + 1)], body(scene, (0.1, 0.08, 0.07)))  # fmt: skip
    lit_up = dark_out(scene)
    win_col = np.asarray(scene.spec.palette.accents[0], F32) * 1.5 if lit_up else body(scene, (0.1, 0.1, 0.12))
    for wx, wy, ww in windows:
        sp.rect(wx - ww, wy - ww * 2.2, wx + ww, wy, win_col)
    sp.commit(depth, reflect_at=base if on_water(scene) and scene.shore_line is None else None)
    if lit_up:
        for wx, wy, ww in windows:
            glow(scene, wx, wy - ww, ww * 3 + 1, scene.spec.palette.accents[0], 0.35)

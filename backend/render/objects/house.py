"""Houses and cabins, their windows lit after dark."""

from __future__ import annotations

import numpy as np

from backend.render.canvas import F32, Scene
from backend.render.objects.placement import body, dark_out, ground_spot, islet, object_count, on_water, shadow_under, side_shade
from backend.render.objects.sprite import Sprite, glow


def paint_house(scene: Scene) -> None:
    rng = scene.rng("obj-house")
    n = object_count(scene, "house", 1, (2, 4), rng)
    for i in range(n):
        size = scene.unit * rng.uniform(0.05, 0.07) * (1.0 if i == 0 else 0.7)
        x, base, depth = ground_spot(scene, rng, scene.slots, size * 1.4, (0.2, 0.4))
        size *= 0.6 + 0.8 * (base - scene.horizon) / max(1, scene.h - scene.horizon) if base > scene.horizon + 2 else 0.8
        sp = Sprite(scene, x - size * 1.8, base - size * 1.3, x + size * 1.8, base + size * 0.2)
        if on_water(scene) and scene.shore_line is None:
            islet(sp, scene, x, base, size * 1.6)
        shadow_under(sp, scene, x, base, size)
        windows: list[tuple[float, float, float]] = []
        house_at(scene, sp, x, base, size, rng, windows)
        sp.commit(depth, reflect_at=base if on_water(scene) and scene.shore_line is None else None)
        if dark_out(scene):
            for wx, wy, ww in windows:
                glow(scene, wx, wy, ww * 2.5 + 1, (1.0, 0.7, 0.35), 0.45)
            if "snow" in scene.spec.elements or scene.shore_line is not None or base > scene.horizon:
                lightpool(scene, x, base, size)


def house_at(
    scene: Scene,
    sp: Sprite,
    x: float,
    base: float,
    size: float,
    rng: np.random.Generator,
    windows: list[tuple[float, float, float]],
) -> None:
    snow = "snow" in scene.spec.elements
    log = "cabin" in scene.spec.words or "forest" in scene.spec.elements or snow
    wall = body(scene, (0.45, 0.3, 0.2) if log else (0.9, 0.86, 0.78), 0.95)
    roof = body(scene, (0.32, 0.18, 0.14) if not snow else (0.25, 0.2, 0.18))
    w, h = size, size * 0.55
    sp.rect(x - w, base - h, x + w, base + 1, side_shade(scene, wall, x, w, False))
    if log:  # logs: dark lines across the walls
        for k in range(1, 6):
            yy = base - h * k / 6
            sp.line([(x - w, yy), (x + w, yy)], max(1.0, size * 0.012), wall * 0.6, 0.8)
    peak = base - h - size * 0.6
    sp.rect(x + w * 0.45, peak + size * 0.05, x + w * 0.65, base - h, body(scene, (0.35, 0.3, 0.3)))  # chimney
    sp.poly([(x - w * 1.2, base - h + 2), (x + w * 1.2, base - h + 2), (x + w * 0.1, peak), (x - w * 0.1, peak)],
            side_shade(scene, roof, x, w, False))  # fmt: skip
    if snow:
        white = body(scene, (0.92, 0.95, 1.0))
        white = np.maximum(white, np.asarray(scene.spec.palette.haze, F32) * 0.8)
        sp.poly([(x - w * 1.22, base - h + 2), (x - w * 0.1, peak - 2), (x + w * 0.1, peak - 2), (x + w * 1.22, base - h + 2),
                 (x + w * 1.1, base - h - size * 0.06), (x - w * 1.1, base - h - size * 0.06)], white)  # fmt: skip
    lit_up = dark_out(scene)
    colour = np.asarray((1.0, 0.72, 0.38), F32) * 1.6 if lit_up else body(scene, (0.15, 0.18, 0.22))
    for fx in (-0.55, 0.45):
        wx, wy = x + w * fx, base - h * 0.55
        sp.rect(wx - w * 0.17, wy - h * 0.2, wx + w * 0.17, wy + h * 0.2, colour)
        sp.line([(wx, wy - h * 0.2), (wx, wy + h * 0.2)], max(1.0, size * 0.015), wall * 0.5)
        windows.append((wx, wy, w * 0.17))
    sp.rect(x - w * 0.08, base - h * 0.62, x + w * 0.12, base + 1, body(scene, (0.2, 0.12, 0.08)))


def lightpool(scene: Scene, x: float, base: float, size: float) -> None:
    """Warm window light spilling on the ground in front of a house."""
    y0, y1 = int(base), min(scene.h, int(base + size * 0.9))
    x0, x1 = max(0, int(x - size * 2.5)), min(scene.w, int(x + size * 2.5))
    if y0 >= y1 or x0 >= x1:
        return
    d = np.hypot((scene.xs[:, x0:x1] - x) / (size * 1.6), (scene.ys[y0:y1] - base) / (size * 0.45))
    scene.img[y0:y1, x0:x1] += (0.22 * np.exp(-d * d))[..., None] * np.asarray((1.0, 0.7, 0.38), F32)

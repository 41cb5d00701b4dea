"""Cars on the ground, their lamps lit after dark."""

from __future__ import annotations

import numpy as np

from backend.render.canvas import F32, Scene, Slots, mix
from backend.render.objects.placement import body, dark_out, object_count, side_shade
from backend.render.objects.sprite import Sprite, glow


def paint_car(scene: Scene) -> None:
    rng = scene.rng("obj-car")
    n = object_count(scene, "car", 1, (2, 4), rng)
    span = scene.h - scene.horizon
    road_y = scene.horizon + span * rng.uniform(0.35, 0.5)
    road_h = span * 0.16
    asphalt = body(scene, (0.2, 0.2, 0.22), 0.8)
    if dark_out(scene):
        asphalt = asphalt + np.asarray(scene.spec.palette.haze, F32) * 0.12
    sp = Sprite(scene, 0, road_y - road_h * 0.5, scene.w - 1, road_y + road_h * 0.5, ss=1)
    sp.rect(-1, road_y - road_h * 0.5, scene.w, road_y + road_h * 0.5, asphalt)
    paint = body(scene, (0.9, 0.85, 0.7)) * 0.9
    for k in np.arange(0, scene.w, scene.unit * 0.12):
        sp.rect(k, road_y - 1.5, k + scene.unit * 0.06, road_y + 1.5, paint)
    sp.commit(0.8, rim=0)
    lit_up = dark_out(scene)
    hues = [(0.75, 0.1, 0.1), (0.15, 0.3, 0.6), (0.85, 0.85, 0.85), (0.15, 0.15, 0.17), (0.9, 0.7, 0.15)]
    slots = Slots()
    for i in range(n):
        s = scene.unit * rng.uniform(0.085, 0.1)
        x = slots.pick(rng, scene, s * 1.2, 0.15, 0.85)
        lane = road_y + (road_h * 0.28 if i % 2 == 0 else -road_h * 0.05)
        d = 1 if (i % 2 == 0) else -1
        sp = Sprite(scene, x - s * 1.3, lane - s * 0.6, x + s * 1.3, lane + s * 0.15)
        hue = hues[int(rng.integers(0, len(hues)))]
        colour = body(scene, scene.spec.tints[0] if i == 0 and scene.spec.tints else hue)
        if lit_up:  # paint picks up the city's glow
            colour = colour + np.asarray(scene.spec.palette.haze, F32) * 0.35
        sp.ellipse(x, lane, s * 1.2, s * 0.08, scene.spec.palette.shadow, 0.5)
        sp.poly([(x - s, lane - s * 0.12), (x + s, lane - s * 0.12), (x + s * 1.02, lane - s * 0.32),
                 (x + s * 0.85 * d if d > 0 else x + s * 0.95, lane - s * 0.38), (x - s * 0.95, lane - s * 0.38),
                 (x - s * 1.02, lane - s * 0.3)], side_shade(scene, colour, x, s, False))  # fmt: skip
        glass = mix(body(scene, (0.5, 0.6, 0.7)), scene.spec.palette.sky[1], 0.4)
        sp.poly([(x - s * 0.55, lane - s * 0.38), (x + s * 0.45, lane - s * 0.38), (x + s * 0.25, lane - s * 0.6),
                 (x - s * 0.4, lane - s * 0.6)], colour * 0.95)  # fmt: skip
        sp.poly([(x - s * 0.45, lane - s * 0.4), (x + s * 0.38, lane - s * 0.4), (x + s * 0.2, lane - s * 0.55),
                 (x - s * 0.33, lane - s * 0.55)], glass)  # fmt: skip
        tyre = body(scene, (0.05, 0.05, 0.05))
        for wx in (-0.6, 0.6):
            sp.ellipse(x + s * wx, lane - s * 0.12, s * 0.17, s * 0.17, tyre)
            sp.ellipse(x + s * wx, lane - s * 0.12, s * 0.07, s * 0.07, body(scene, (0.6, 0.6, 0.6)))
        sp.commit(0.9)
        if lit_up:
            glow(scene, x + d * s * 1.0, lane - s * 0.26, s * 0.06, (1.0, 0.95, 0.8), 1.5)
            glow(scene, x + d * s * 2.2, lane + s * 0.02, s * 0.5, (1.0, 0.9, 0.7), 0.12)  # light on the road
            glow(scene, x - d * s * 1.0, lane - s * 0.26, s * 0.04, (1.0, 0.15, 0.1), 1.0)

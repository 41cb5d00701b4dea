"""People standing in the scene, seen from behind."""

from __future__ import annotations

import numpy as np

from backend.render.canvas import Scene, mix
from backend.render.objects.placement import body, object_count, on_water, side_shade
from backend.render.objects.sprite import Sprite


def paint_person(scene: Scene) -> None:
    rng = scene.rng("obj-person")
    n = object_count(scene, "person", 1, (2, 4), rng)
    p = scene.spec.palette
    colour = mix(p.shadow, body(scene, (0.3, 0.25, 0.22)), 0.5 if scene.spec.light in ("day", "golden") else 0.15)
    span = scene.h - scene.horizon
    for i in range(n):
        if scene.shore_line is not None:
            x = scene.slots.pick(rng, scene, scene.unit * 0.03)
            line = float(scene.shore_line[int(np.clip(x, 0, scene.w - 1))])
            base = line + (scene.h - line) * rng.uniform(0.3, 0.6)
        elif on_water(scene):  # a figure on the near bank: a low ledge of rock at the bottom
            x = scene.slots.pick(rng, scene, scene.unit * 0.03, 0.3, 0.7)
            base = scene.h - span * 0.12
        else:
            x = scene.slots.pick(rng, scene, scene.unit * 0.03, 0.3, 0.7)
            base = scene.horizon + span * rng.uniform(0.45, 0.7)
        s = scene.unit * 0.05 + (base - scene.horizon) / max(1, span) * scene.unit * 0.12
        s *= 1 if i == 0 else rng.uniform(0.8, 0.95)
        sp = Sprite(scene, x - s * 2.5, base - s * 1.1, x + s * 2.5, min(scene.h, base + s * 0.3) + s * 0.3)
        if on_water(scene) and scene.shore_line is None:
            rock = body(scene, (0.25, 0.24, 0.22), 0.7)
            sp.poly([(x - s * 2.4, scene.h + 5), (x - s * 1.8, base + s * 0.02), (x + s * 1.6, base - s * 0.02),
                     (x + s * 2.4, scene.h + 5)], side_shade(scene, rock, x, s * 2))  # fmt: skip
        if scene.spec.light in ("golden", "sunset", "dawn"):  # a long shadow away from the sun
            d = 1 if scene.sun_left else -1
            sp.poly([(x - s * 0.1, base), (x + s * 0.1, base), (x + d * s * 2.2, base + s * 0.12),
                     (x + d * s * 2.0, base + s * 0.2)], p.shadow, 0.35)  # fmt: skip
        person_at(sp, scene, x, base, s, rng, colour)
        sp.commit(0.95)


def person_at(sp: Sprite, scene: Scene, x: float, base: float, s: float, rng: np.random.Generator, colour: np.ndarray) -> None:
    """A small standing figure in a long coat, seen from behind; perhaps a pack and a staff."""
    sp.ellipse(x, base - s * 0.89, s * 0.062, s * 0.072, colour)
    sp.poly([(x - s * 0.03, base - s * 0.83), (x + s * 0.03, base - s * 0.83), (x + s * 0.035, base - s * 0.79),
             (x - s * 0.035, base - s * 0.79)], colour)  # fmt: skip
    coat = [(x - s * 0.05, base - s * 0.8), (x + s * 0.05, base - s * 0.8), (x + s * 0.11, base - s * 0.76),
            (x + s * 0.12, base - s * 0.6), (x + s * 0.15, base - s * 0.32), (x - s * 0.15, base - s * 0.32),
            (x - s * 0.12, base - s * 0.6), (x - s * 0.11, base - s * 0.76)]  # fmt: skip
    sp.poly(coat, colour)
    stride = rng.uniform(0.02, 0.08)
    for sx in (-1, 1):
        sp.poly(
            [
                (x + sx * s * 0.09, base - s * 0.34),
                (x + sx * s * 0.015, base - s * 0.34),
                (x + sx * (s * 0.03 + stride * s), base),
                (x + sx * (s * 0.075 + stride * s), base),
            ],
            colour,
        )
    if rng.random() < 0.6:  # a backpack
        sp.ellipse(x, base - s * 0.6, s * 0.1, s * 0.13, colour * 1.1)
    if rng.random() < 0.5:  # a walking staff
        sx = 1 if rng.random() < 0.5 else -1
        sp.line([(x + sx * s * 0.17, base - s * 1.02), (x + sx * s * 0.26, base)], max(1.0, s * 0.018), colour)

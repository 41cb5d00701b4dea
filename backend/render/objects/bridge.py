"""A bridge across the water or the valley."""

from __future__ import annotations

import math

import numpy as np

from backend.render.canvas import Scene
from backend.render.objects.placement import body, dark_out, on_water, side_shade
from backend.render.objects.sprite import Sprite, glow


def paint_bridge(scene: Scene) -> None:
    rng = scene.rng("obj-bridge")
    u, hz = scene.unit, scene.horizon
    water = on_water(scene)
    y = hz + (scene.h - hz) * rng.uniform(0.08, 0.18) if water else hz + (scene.h - hz) * 0.05
    n = int(rng.integers(4, 7))
    span = scene.w * 1.04 / n
    x0 = -scene.w * 0.02 - rng.uniform(0, span * 0.5)
    x1 = x0 + span * (n + 1)
    deck = y - u * rng.uniform(0.1, 0.14)
    sp = Sprite(scene, max(-2, x0), deck - u * 0.03, min(scene.w + 2, x1), y + 2, ss=2)
    stone = body(scene, (0.62, 0.56, 0.48), 0.9)
    sp.rect(x0, deck - u * 0.012, x1, y + 2, side_shade(scene, stone, scene.w / 2, scene.w / 2))
    sp.rect(x0, deck - u * 0.022, x1, deck - u * 0.012, stone * 1.12)  # parapet
    sp.rect(x0, deck + u * 0.004, x1, deck + u * 0.009, stone * 0.75)  # string course
    for k in range(n + 1):  # open arches between the piers
        a, b = x0 + k * span + span * 0.13, x0 + (k + 1) * span - span * 0.13
        half, spring = (b - a) / 2, y - (y - deck) * 0.35
        rise = min(half, spring - deck - u * 0.02)
        arch = [(a, y + 3)] + [((a + b) / 2 - math.cos(t) * half, spring - math.sin(t) * rise)
                               for t in np.linspace(0, math.pi, 24)] + [(b, y + 3)]  # fmt: skip
        ring = [((a + b) / 2 - math.cos(t) * (half + u * 0.008), spring - math.sin(t) * (rise + u * 0.008))
                for t in np.linspace(0, math.pi, 24)]  # fmt: skip
        sp.line(ring, u * 0.004, stone * 0.8)
        sp.cut(arch)
    sp.commit(0.55, reflect_at=y if water else None)
    if dark_out(scene):
        for k in range(n + 1):
            glow(scene, x0 + k * span + span * 0.5, deck - u * 0.03, u * 0.004, (1.0, 0.8, 0.5), 0.8)

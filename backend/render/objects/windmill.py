"""Windmills."""

from __future__ import annotations

import math

from backend.render.canvas import Scene
from backend.render.objects.placement import body, dark_out, ground_spot, islet, object_count, on_water, side_shade
from backend.render.objects.sprite import Sprite, glow


def paint_windmill(scene: Scene) -> None:
    rng = scene.rng("obj-windmill")
    n = object_count(scene, "windmill", 1, (2, 4), rng)
    for i in range(n):
        size = scene.unit * rng.uniform(0.14, 0.19) * (1 if i == 0 else 0.6)
        x, base, depth = ground_spot(scene, rng, scene.slots, size * 0.6, (0.15, 0.35))
        sp = Sprite(scene, x - size * 0.8, base - size * 1.6, x + size * 0.8, base + size * 0.15)
        if on_water(scene) and scene.shore_line is None:
            islet(sp, scene, x, base, size * 0.5)
        wall = body(scene, (0.7, 0.62, 0.5), 0.95)
        bw, tw, th = size * 0.16, size * 0.09, size * 0.8
        sp.poly(
            [(x - bw, base + 1), (x + bw, base + 1), (x + tw, base - th), (x - tw, base - th)], side_shade(scene, wall, x, bw)
        )
        cap = body(scene, (0.3, 0.22, 0.2))
        sp.poly([(x - tw * 1.3, base - th + 1), (x + tw * 1.3, base - th + 1), (x, base - th - size * 0.15)], cap)
        hub = (x, base - th - size * 0.02)
        sail = body(scene, (0.85, 0.8, 0.72))
        frame = body(scene, (0.18, 0.14, 0.12))
        turn = rng.uniform(0, math.pi / 2)
        for k in range(4):
            t = turn + k * math.pi / 2
            dx, dy = math.cos(t), math.sin(t)
            nx, ny = -dy, dx
            L, W = size * 0.62, size * 0.09
            quad = [(hub[0] + dx * L * 0.15, hub[1] + dy * L * 0.15), (hub[0] + dx * L, hub[1] + dy * L),
                    (hub[0] + dx * L + nx * W, hub[1] + dy * L + ny * W),
                    (hub[0] + dx * L * 0.15 + nx * W, hub[1] + dy * L * 0.15 + ny * W)]  # fmt: skip
            sp.poly(quad, sail, 0.85)
            sp.line([hub, (hub[0] + dx * L, hub[1] + dy * L)], max(1.0, size * 0.015), frame)
        sp.ellipse(hub[0], hub[1], size * 0.025, size * 0.025, frame)
        sp.rect(x - bw * 0.2, base - size * 0.16, x + bw * 0.2, base + 1, frame)
        sp.commit(depth)
        if dark_out(scene):
            glow(scene, x, base - size * 0.35, size * 0.03, (1.0, 0.7, 0.35), 0.6)

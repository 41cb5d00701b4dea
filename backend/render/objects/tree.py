"""Lone trees."""

from __future__ import annotations

from backend.render.canvas import Scene
from backend.render.objects.placement import body, ground_spot, islet, object_count, on_water, shadow_under, side_shade
from backend.render.objects.sprite import Sprite


def paint_tree(scene: Scene) -> None:
    rng = scene.rng("obj-tree")
    n = object_count(scene, "tree", 1, (2, 4), rng)
    for i in range(n):
        size = scene.unit * rng.uniform(0.12, 0.17) * (1 if i == 0 else 0.6)
        x, base, depth = ground_spot(scene, rng, scene.slots, size * 0.6, (0.25, 0.5))
        sp = Sprite(scene, x - size, base - size * 1.3, x + size, base + size * 0.15)
        if on_water(scene) and scene.shore_line is None:
            islet(sp, scene, x, base, size * 0.6)
        shadow_under(sp, scene, x, base, size * 0.4)
        bark = body(scene, (0.22, 0.16, 0.12))
        th = size * 0.55
        sp.poly([(x - size * 0.05, base + 1), (x + size * 0.05, base + 1), (x + size * 0.025, base - th),
                 (x - size * 0.025, base - th)], bark)  # fmt: skip
        for sx in (-1, 1):
            sp.line([(x, base - th * 0.6), (x + sx * size * 0.25, base - th * 1.05)], size * 0.025, bark)
        desert = "desert" in scene.spec.elements
        leaf = body(scene, (0.2, 0.36, 0.14) if not desert else (0.3, 0.36, 0.16), 0.95)
        cy = base - th - size * (0.05 if desert else 0.15)
        blobs = rng.uniform(-1, 1, (9, 2))
        flat = 0.45 if desert else 0.9  # an acacia's flat crown in the desert
        for bx, by in blobs:
            r = size * rng.uniform(0.18, 0.26)
            sp.ellipse(x + bx * size * 0.32, cy + by * size * 0.16 * flat, r, r * flat * 0.85,
                       side_shade(scene, leaf, x, size * 0.5))  # fmt: skip
        sp.commit(depth)

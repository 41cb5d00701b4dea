"""Birds in the sky."""

from __future__ import annotations

from backend.render.canvas import Scene, mix
from backend.render.objects.sprite import Sprite


def paint_birds(scene: Scene) -> None:
    rng = scene.rng("obj-birds")
    many = "birds" in scene.spec.plural or rng.random() < 0.6
    n = int(rng.integers(5, 12)) if many else int(rng.integers(1, 3))
    cx = scene.w * rng.uniform(0.25, 0.75)
    cy = scene.horizon * rng.uniform(0.18, 0.45)
    if abs(cx - scene.sun_x) < scene.unit * 0.1 and abs(cy - scene.sun_y) < scene.unit * 0.1:
        cx += scene.unit * 0.2
    p = scene.spec.palette
    colour = mix(p.shadow, p.sky[0], 0.25) * 0.8
    if scene.spec.light == "night":
        colour = mix(p.sky[0], (0, 0, 0), 0.5)
    u = scene.unit
    sp = Sprite(scene, cx - u * 0.3, cy - u * 0.15, cx + u * 0.3, cy + u * 0.15)
    direction = 1 if rng.random() < 0.5 else -1
    for k in range(n):
        # a loose V formation, each bird its own size and wingbeat
        row = k - n // 2
        bx = cx + direction * (-abs(row) * u * 0.035 + rng.normal(0, u * 0.012))
        by = cy + row * u * 0.022 + rng.normal(0, u * 0.008)
        s = u * rng.uniform(0.012, 0.02)
        lift = rng.uniform(-0.3, 0.7)
        pts = [(bx - s, by - s * lift), (bx - s * 0.45, by - s * (0.35 + lift * 0.3)), (bx, by),
               (bx + s * 0.45, by - s * (0.35 + lift * 0.3)), (bx + s, by - s * lift)]  # fmt: skip
        sp.line(pts, max(1.0, s * 0.16), colour)
    sp.commit(0.6, rim=0)

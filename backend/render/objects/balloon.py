"""Hot-air balloons."""

from __future__ import annotations

import math

import numpy as np

from backend.render.canvas import F32, Scene, Slots, mix
from backend.render.objects.placement import body, dark_out, object_count
from backend.render.objects.sprite import Sprite, glow


def paint_balloon(scene: Scene) -> None:
    rng = scene.rng("obj-balloon")
    n = object_count(scene, "balloon", 1, (3, 6), rng)
    accents = [np.asarray(a, F32) for a in scene.spec.palette.accents]
    hues = [(0.85, 0.2, 0.15), (0.95, 0.7, 0.15), (0.2, 0.45, 0.8), (0.9, 0.45, 0.2), (0.3, 0.6, 0.4)]
    named = dict(scene.spec.object_tints).get("balloon")  # "a red balloon": its colour, for every seed
    slots = Slots()
    items = []
    for i in range(n):
        t = rng.uniform(0.4, 1.0) if i == 0 else rng.uniform(0.1, 0.7)
        r = scene.unit * (0.025 + 0.07 * t)
        x = slots.pick(rng, scene, r * 1.3, 0.1, 0.9)
        y = scene.horizon * rng.uniform(0.2, 0.6) + (1 - t) * scene.horizon * 0.15
        items.append((t, x, y, r))
    for t, x, y, r in sorted(items):
        a = np.asarray(hues[int(rng.integers(0, len(hues)))], F32)
        b = accents[int(rng.integers(0, len(accents)))] if rng.random() < 0.4 else np.asarray((0.95, 0.92, 0.85), F32)
        sp = Sprite(scene, x - r * 1.2, y - r * 1.2, x + r * 1.2, y + r * 2.2)
        ca, cb = body(scene, a, 1.0), body(scene, b * 0.9, 1.0)
        if named is not None:  # the colour the prompt names, kept recognisable under any light; gores a shade lighter
            ca = np.asarray(named, F32) * F32(0.5 + 0.5 * scene.spec.palette.brightness)
            cb = mix(ca, np.full(3, ca.max(), F32), 0.25)
        side = -1.0 if scene.sun_left else 1.0
        low = 0.45 if scene.spec.light != "night" else 0.8

        def envelope(
            X: np.ndarray,
            Y: np.ndarray,
            ca: np.ndarray = ca,
            cb: np.ndarray = cb,
            x: float = x,
            y: float = y,
            r: float = r,
            side: float = side,
            low: float = low,
        ) -> np.ndarray:
            nx = np.clip((X - x) / r, -1, 1)
            ang = np.arcsin(nx)  # gores: vertical stripes that bunch toward the edges
            stripe = (np.floor(ang / (math.pi / 7) + 10) % 2)[..., None]
            nz = np.sqrt(np.clip(1 - nx * nx, 0, 1))
            k = np.clip(0.3 + 0.6 * nx * side + 0.5 * nz - 0.3 * np.clip((Y - y) / r, 0, 1), 0, 1)
            k = np.broadcast_to(k, np.broadcast(X, Y).shape)
            return mix(ca, cb, stripe) * (low + (1.3 - low) * k)[..., None]

        sp.ellipse(x, y, r, r * 1.05, envelope)
        sp.poly([(x - r * 0.93, y + r * 0.35), (x + r * 0.93, y + r * 0.35), (x + r * 0.28, y + r * 1.45),
                 (x - r * 0.28, y + r * 1.45)], envelope)  # fmt: skip
        rope = body(scene, (0.25, 0.2, 0.15))
        for sx in (-1, 1):
            sp.line([(x + sx * r * 0.26, y + r * 1.45), (x + sx * r * 0.15, y + r * 1.75)], max(1.0, r * 0.02), rope)
        sp.rect(x - r * 0.17, y + r * 1.75, x + r * 0.17, y + r * 1.98, body(scene, (0.45, 0.3, 0.18)))
        if named is None:
            sp.commit(0.3 + 0.5 * t)
        else:  # a named colour: little haze over it and no tinted rim, so it reads as that colour
            sp.commit(0.8 + 0.2 * t, rim=0.0)
        if dark_out(scene) or scene.spec.light == "dawn":
            glow(scene, x, y + r * 1.5, r * 0.25, (1.0, 0.6, 0.25), 0.5 if scene.spec.light == "dawn" else 0.9)

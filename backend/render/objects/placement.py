"""Where things stand and how they are lit: the ground, the shore, a hill's crest, an islet; lit sides and silhouettes."""

from __future__ import annotations

import numpy as np

from backend.render.canvas import F32, Scene, Slots, lit
from backend.render.objects.sprite import ColourFn, Sprite
from backend.render.prompt_scene import RGB


def object_count(scene: Scene, name: str, one: int, many: tuple[int, int], rng: np.random.Generator) -> int:
    return int(rng.integers(*many)) if name in scene.spec.plural else one


def dark_out(scene: Scene) -> bool:
    """Lamps and windows are lit."""
    return scene.spec.light in ("night", "sunset") or scene.spec.weather == "storm"


def body(scene: Scene, albedo: RGB | np.ndarray, amount: float = 1.0) -> np.ndarray:
    """An object's surface colour under the scene's light; after dark, a silhouette darker than the sky."""
    colour = lit(albedo, scene, amount)
    return colour * 0.55 if scene.spec.light == "night" else colour


def side_shade(scene: Scene, base: RGB | np.ndarray, cx: float, half: float, round_: bool = True) -> ColourFn:
    """A colour function: the sun's side of a shape is lit, the other side in shadow."""
    base = np.asarray(base, F32)
    side = -1.0 if scene.sun_left else 1.0
    low = 0.55 if scene.spec.light != "night" else 0.8

    def colour(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        nx = np.clip((X - cx) / max(half, 1e-3), -1, 1)
        if round_:
            k = np.clip(0.35 + 0.65 * nx * side + 0.3 * np.sqrt(1 - nx * nx), 0, 1)
        else:
            k = np.where(nx * side > 0, 1.0, 0.0).astype(F32)
        k = np.broadcast_to(k, np.broadcast(X, Y).shape)
        return base * (low + (1.25 - low) * k)[..., None]

    return colour


def on_water(scene: Scene) -> bool:
    return "water" in scene.spec.elements


def ground_spot(
    scene: Scene, rng: np.random.Generator, slots: Slots, half: float, near: tuple[float, float]
) -> tuple[float, float, float]:
    """(x, base y, depth) for a thing standing on land: a hill's crest, the shore, or the ground."""
    e = scene.spec.elements
    if scene.shore_line is not None:  # stand on the bank in the foreground
        x = slots.pick(rng, scene, half)
        line = float(scene.shore_line[int(np.clip(x, 0, scene.w - 1))])
        return x, line + (scene.h - line) * rng.uniform(0.15, 0.45), 0.9
    if on_water(scene):  # a far shore: the horizon, where an islet is drawn under it
        return slots.pick(rng, scene, half), float(scene.horizon) + 1, 0.45
    if scene.hill_ridges and rng.random() < 0.75:  # on a crest
        ridge = np.minimum.reduce(scene.hill_ridges)
        x = slots.pick(rng, scene, half)
        lo, hi = int(max(0, x - scene.w * 0.12)), int(min(scene.w - 1, x + scene.w * 0.12))
        x = float(lo + np.argmin(ridge[lo:hi]))
        slots.taken[-1] = (x - half, x + half)
        xs = slice(int(max(0, x - half)), int(min(scene.w, x + half)) + 1)
        return x, float(ridge[xs].max()) + 1, 0.55
    span = scene.h - scene.horizon
    band = (0.42, 0.58) if "forest" in e else (0.12, 0.88)
    x = slots.pick(rng, scene, half, *band)
    t = rng.uniform(*near)
    return x, scene.horizon + span * t, 0.5 + 0.5 * t


def shadow_under(sprite: Sprite, scene: Scene, x: float, y: float, half: float) -> None:
    """A soft contact shadow so a thing sits on the ground instead of floating."""
    col = np.asarray(scene.spec.palette.shadow, F32)
    sprite.ellipse(x, y, half * 1.3, max(1.5, half * 0.12), col, 0.45)


def islet(sp: Sprite, scene: Scene, x: float, base: float, half: float) -> None:
    """A low rocky island for a building on open water to stand on."""
    rock = body(scene, (0.3, 0.32, 0.25), 0.8)
    pts = [
        (x - half * 1.5, base + 2),
        (x - half * 1.1, base - half * 0.08),
        (x - half * 0.4, base - half * 0.14),
        (x + half * 0.5, base - half * 0.12),
        (x + half * 1.2, base - half * 0.05),
        (x + half * 1.6, base + 2),
    ]
    sp.poly(pts, side_shade(scene, rock, x, half * 1.5))

"""Paint a scene from a prompt: the `local` image provider's renderer, and the plan of its layers.

Layers are painted back to front into one float RGB canvas (0..1, display space) with numpy;
Pillow only resizes noise, draws polygons and blurs. Everything random comes from generators
seeded by (prompt words, seed, layer name), so a (prompt, seed) pair always gives the same pixels.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from PIL import Image

from backend.providers.base import ProgressFn, StepCancelled
from backend.render import objects
from backend.render.canvas import LAND, Scene
from backend.render.landscape import (
    paint_bloom,
    paint_city,
    paint_clouds,
    paint_far_dunes,
    paint_finish,
    paint_fog,
    paint_ground,
    paint_hills,
    paint_mountains,
    paint_near_trees,
    paint_planet,
    paint_shore,
    paint_sky,
    paint_snowfall,
    paint_space,
    paint_stars,
    paint_storm,
    paint_sun,
    paint_treeline,
    paint_water,
)
from backend.render.prompt_scene import SceneSpec, parse_prompt

MIN_SIZE = 16


def render_scene(
    prompt: str,
    seed: int,
    width: int,
    height: int,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    supersample: int = 1,
) -> Image.Image:
    """An RGB image of exactly width x height that depicts the prompt; same inputs, same pixels.

    With `supersample` n > 1 the scene is painted at n times the size and scaled down (each
    pixel the mean of n x n): smoother edges and finer grain, for about n² the time."""
    if width < MIN_SIZE or height < MIN_SIZE:
        raise ValueError(f"render_scene needs at least {MIN_SIZE}x{MIN_SIZE} pixels, got {width}x{height}")
    if cancel is not None and cancel.is_set():
        raise StepCancelled()
    scene = Scene(parse_prompt(prompt), seed, width * supersample, height * supersample)
    layers = plan_layers(scene.spec)
    for done, layer in enumerate(layers, start=1):
        if cancel is not None and cancel.is_set():
            raise StepCancelled()
        layer(scene)
        if progress is not None:
            progress(done / len(layers))
    image = scene.to_image()
    return image.reduce(supersample) if supersample > 1 else image


def plan_layers(spec: SceneSpec) -> list[Callable[[Scene], None]]:
    """Which painters run, back to front, for this scene."""
    e = spec.elements
    space_only = "space" in e and not e & LAND
    layers: list[Callable[[Scene], None]] = [paint_space if "space" in e else paint_sky]
    if (spec.light == "night" and spec.weather != "storm") or e & {"stars", "space"}:
        layers.append(paint_stars)
    if "planet" in e or ("space" in e and spec.digest % 2 == 0):
        layers.append(paint_planet)
    elif "space" not in e:
        layers.append(paint_sun)
    if "space" not in e and spec.weather != "fog":
        layers.append(paint_clouds)
    if "mountains" in e or ("snow" in e and not e & {"city", "desert"}):
        layers.append(paint_mountains)
    if "hills" in e:
        layers.append(paint_hills)
    if "desert" in e:
        layers.append(paint_far_dunes)
    if "city" in e:
        layers.append(paint_city)
    if "forest" in e:
        layers.append(paint_treeline)
    if "water" in e:
        layers.append(paint_water)
        if e & {"beach", "field", "snow", "desert"}:
            layers.append(paint_shore)
    elif not space_only:
        layers.append(paint_ground)
    if spec.weather == "fog":
        layers.append(paint_fog)  # before the nearest trees, which stand in front of it
    if "forest" in e:
        layers.append(paint_near_trees)
    layers += [objects.PAINTERS[name] for name in objects.OBJECT_ORDER if name in spec.objects]
    if spec.weather == "storm":
        layers.append(paint_storm)
    if "snow" in e and spec.weather != "clear":
        layers.append(paint_snowfall)
    return [*layers, paint_bloom, paint_finish]

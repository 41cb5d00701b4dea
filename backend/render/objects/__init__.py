"""Things standing in the scene: lighthouses, boats, castles, houses, trees, bridges, windmills,
birds, balloons, people and cars, drawn when the prompt names them.

Each object is a handful of flat-shaded polygons drawn into a small supersampled sprite, then
composited into the canvas with atmospheric haze, a rim of light on the sun's side when the sun is
low, a wobbling reflection when it stands on water, and glows for lamps and windows after dark.
Placement (side, distance, size) comes from the scene's seeded generators, so it varies per seed
and stays deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

from backend.render.canvas import Scene
from backend.render.objects.balloon import paint_balloon
from backend.render.objects.birds import paint_birds
from backend.render.objects.boat import paint_boat
from backend.render.objects.bridge import paint_bridge
from backend.render.objects.car import paint_car
from backend.render.objects.castle import paint_castle
from backend.render.objects.house import paint_house
from backend.render.objects.lighthouse import paint_lighthouse
from backend.render.objects.person import paint_person
from backend.render.objects.tree import paint_tree
from backend.render.objects.windmill import paint_windmill

#: Back to front: sky things first, then far to near.
OBJECT_ORDER = ("birds", "balloon", "bridge", "lighthouse", "castle", "windmill", "house", "tree", "boat",
                "car", "person")  # fmt: skip
PAINTERS: dict[str, Callable[[Scene], None]] = {
    "lighthouse": paint_lighthouse, "boat": paint_boat, "castle": paint_castle, "house": paint_house,
    "tree": paint_tree, "bridge": paint_bridge, "windmill": paint_windmill, "birds": paint_birds,
    "balloon": paint_balloon, "person": paint_person, "car": paint_car,
}  # fmt: skip

"""The local renderer for a first-time user: what it understood of a prompt, colour words that
reach their objects, and a quality setting that changes something."""

from __future__ import annotations

import asyncio
import io
import threading

import numpy as np
import pytest
from PIL import Image

from backend.providers.base import ImageRequest
from backend.providers.local import LocalImageProvider
from backend.render import objects, render_scene
from backend.render.prompt_scene import understanding

#: The three prompts of issue 19 that the renderer cannot draw, and what it says about them.
UNDERSTOOD = [
    ("a cat sleeping on a windowsill in the rain", ["rain"], ["cat", "sleeping", "windowsill"]),
    ("a portrait of an old fisherman", [], ["portrait", "old", "fisherman"]),
    ("a bowl of ramen on a wooden table", [], ["bowl", "ramen", "wooden", "table"]),
    ("a red hot-air balloon over dunes at sunrise", ["red", "hot-air", "balloon", "dunes", "sunrise"], []),
    ("Neon city at night in New York", ["neon", "city", "night", "new york"], []),
]


@pytest.mark.parametrize(("prompt", "drawn", "unknown"), UNDERSTOOD)
def test_the_renderer_says_which_words_it_drew_and_which_it_could_not(prompt: str, drawn: list, unknown: list):
    assert understanding(prompt) == (drawn, unknown)


def balloon_pixels(prompt: str, seed: int, width: int = 384, height: int = 256) -> np.ndarray:
    """The pixels the balloon painter changed: the scene rendered with and without it (0..1 RGB)."""
    with_balloon = np.asarray(render_scene(prompt, seed, width, height), dtype=np.float64) / 255
    painter = objects.PAINTERS["balloon"]
    objects.PAINTERS["balloon"] = lambda scene: None
    try:
        without = np.asarray(render_scene(prompt, seed, width, height), dtype=np.float64) / 255
    finally:
        objects.PAINTERS["balloon"] = painter
    return with_balloon[np.abs(with_balloon - without).sum(axis=2) > 0.3]


def share_of_hue(pixels: np.ndarray, hue: float, width: float = 30) -> float:
    """The share of `pixels` that are saturated and within `width` degrees of `hue`."""
    top, bottom = pixels.max(axis=1), pixels.min(axis=1)
    saturation = (top - bottom) / np.maximum(top, 1e-6)
    r, g, b = pixels.T
    hues = np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360
    return float(np.mean((np.abs((hues - hue + 180) % 360 - 180) < width) & (saturation > 0.3)))


@pytest.mark.parametrize(
    ("prompt", "hue"), [("a red hot-air balloon", 5), ("a blue hot-air balloon at noon", 220), ("a green hot-air balloon", 130)]
)
def test_a_colour_word_colours_the_balloon_for_every_seed(prompt: str, hue: float):
    """Most of what the balloon painter draws (its ropes and basket are brown) has the named hue,
    whatever the seed chooses (the light, the balloon's place and size)."""
    shares = {}
    for seed in range(16):
        pixels = balloon_pixels(prompt, seed)
        assert len(pixels) > 200, f"seed {seed}: no balloon drawn"
        shares[seed] = round(share_of_hue(pixels, hue), 2)
    assert min(shares.values()) >= 0.6, f"the balloon is not {prompt.split()[1]} for every seed: {shares}"


# -- quality "high" means something for the local renderer -----------------------------------------


class Step:
    """A StepContext as the pipeline gives one, reduced to what the local provider uses."""

    def __init__(self) -> None:
        self.cancel_event = threading.Event()
        self.remote_id = None
        self.resumed = False
        self.lines: list[str] = []

    def progress(self, fraction: float, message: str | None = None) -> None:
        pass

    def log(self, message: str) -> None:
        self.lines.append(message)


def rendered(quality: str, prompt: str = "A lighthouse on the coast at golden hour, boats and gulls") -> tuple[np.ndarray, Step]:
    step = Step()
    request = ImageRequest(prompt=prompt, width=512, height=512, quality=quality, seed=3)
    result = asyncio.run(LocalImageProvider().generate(request, step))
    with Image.open(io.BytesIO(result.png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64), step


def roughness(pixels: np.ndarray) -> float:
    """Mean absolute Laplacian: the pixel-to-pixel jaggedness of edges and grain."""
    return float(
        np.abs(4 * pixels[1:-1, 1:-1] - pixels[:-2, 1:-1] - pixels[2:, 1:-1] - pixels[1:-1, :-2] - pixels[1:-1, 2:]).mean()
    )


def coarse(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(32, 16, 32, 16, 3).mean(axis=(1, 3))


def test_high_quality_paints_the_same_scene_with_smoother_edges():
    standard, standard_step = rendered("standard")
    high, high_step = rendered("high")
    assert standard.shape == high.shape == (512, 512, 3)
    assert np.abs(coarse(standard) - coarse(high)).mean() < 4, "the same scene: same composition and colours"
    assert roughness(high) < 0.8 * roughness(standard), "supersampled: smoother edges and finer grain"
    assert "painted at 2x and scaled down (quality high)" in high_step.lines[0]
    assert "painted at" not in standard_step.lines[0]

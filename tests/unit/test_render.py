"""The `local` renderers, for real: scenes painted to pixels, clips encoded and decoded with PyAV."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from backend.providers.base import StepCancelled
from backend.render import OUTPUT_SIZES, animate_image, objects, output_size_for, render_scene
from backend.render import scene as scene_module
from backend.render.animate import CameraMove, camera_maps
from backend.render.prompt_scene import parse_prompt

GOLDEN = "A majestic mountain landscape at golden hour"
NEON = "a neon city at night"
SIZES = [(1024, 1024), (1792, 1024), (1024, 1792)]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


@pytest.fixture(scope="module")
def golden_and_neon() -> tuple[np.ndarray, np.ndarray]:
    return pixels(render_scene(GOLDEN, 1, 1792, 1024)), pixels(render_scene(NEON, 1, 1792, 1024))


# --------------------------------------------------------------------------- prompt parsing


def test_prompt_words_become_a_scene_spec():
    golden, neon = parse_prompt(GOLDEN), parse_prompt(NEON)
    assert golden.light == "golden" and "mountains" in golden.elements and golden.mood == "epic"
    assert neon.light == "night" and {"city", "neon"} <= neon.elements
    fog = parse_prompt("a forest in fog")
    assert fog.weather == "fog" and "forest" in fog.elements
    assert parse_prompt("ocean sunset").light == "sunset"
    assert parse_prompt("purple and teal sky").tints == ((0.58, 0.30, 0.85), (0.10, 0.65, 0.65))


def test_unknown_prompts_get_a_stable_scene_of_their_own():
    quiet = parse_prompt("a quiet thought")
    assert not quiet.known and quiet.elements  # still something to paint
    assert parse_prompt("a quiet thought") == quiet
    others = {parse_prompt(p).digest for p in ("a quiet thought", "an old promise", "the colour of Tuesday")}
    assert len(others) == 3


# --------------------------------------------------------------------------- render_scene


@pytest.mark.parametrize("size", SIZES)
def test_scene_has_exactly_the_requested_size(size):
    image = render_scene("ocean sunset", 3, *size)
    assert image.mode == "RGB" and image.size == size


def test_same_prompt_and_seed_give_identical_pixels():
    prompt = "snowy mountains above a misty lake at dawn"
    first = render_scene(prompt, 42, 1024, 1024).tobytes()
    assert render_scene(prompt, 42, 1024, 1024).tobytes() == first


def test_another_seed_gives_another_image():
    a = pixels(render_scene(NEON, 1, 1024, 1024))
    b = pixels(render_scene(NEON, 2, 1024, 1024))
    assert np.abs(a - b).mean() > 3  # different skylines, stars, clouds


def test_unknown_prompt_still_renders_a_varied_image():
    image = pixels(render_scene("a quiet thought", 5, 1024, 1024))
    assert image.std() > 15  # a scene, not a flat fill
    assert np.abs(image - pixels(render_scene("an old promise", 5, 1024, 1024))).mean() > 5


def test_night_city_is_darker_than_golden_mountains(golden_and_neon):
    golden, neon = golden_and_neon
    assert golden.mean() > neon.mean() + 40


def test_golden_hour_is_warm_and_night_city_is_not(golden_and_neon):
    golden, neon = golden_and_neon
    red, blue = golden[..., 0].mean(), golden[..., 2].mean()
    assert red > blue + 25  # orange light
    assert neon[..., 2].mean() > neon[..., 1].mean()  # blue/violet dominates the night


def test_scene_progress_is_monotonic_and_ends_at_one():
    seen: list[float] = []
    render_scene("a forest in fog", 1, 1024, 1024, progress=seen.append)
    assert len(seen) >= 5
    assert seen == sorted(seen) and 0 < seen[0] and seen[-1] == 1.0


def test_scene_cancelled_before_start_raises():
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(StepCancelled):
        render_scene(GOLDEN, 1, 1792, 1024, cancel=cancel)


def test_scene_cancelled_midway_stops_between_layers():
    cancel = threading.Event()
    seen: list[float] = []

    def progress(fraction: float) -> None:
        seen.append(fraction)
        if fraction > 0.3:
            cancel.set()

    with pytest.raises(StepCancelled):
        render_scene(GOLDEN, 1, 1792, 1024, progress=progress, cancel=cancel)
    assert seen[-1] < 1.0


# --------------------------------------------------------------------------- animate_image


def still(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Any picture: a smooth gradient with texture, like a photo at a glance."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x / width * 200 + 30, y / height * 180 + 40, (x + y) / (width + height) * 120 + 60], -1)
    rgb += np.random.default_rng(0).normal(0, 12, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").convert(mode)


def decode(path: Path) -> tuple[av.video.stream.VideoStream, list[np.ndarray]]:
    """The video stream and its frames' luma, at half resolution (plenty to compare frames)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="gray")[::2, ::2].astype(np.float32) for frame in container.decode(stream)]
        return stream, frames


def mp4_boxes(data: bytes) -> list[str]:
    """The top-level box types of an MP4 file, in order."""
    names, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        names.append(data[pos + 4 : pos + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        if size < 8:
            break
        pos += size
    return names


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_output_size_follows_orientation():
    assert output_size_for(1792, 1024) == OUTPUT_SIZES["landscape"] == (1280, 720)
    assert output_size_for(1024, 1792) == OUTPUT_SIZES["portrait"] == (720, 1280)
    assert output_size_for(1024, 1024) == OUTPUT_SIZES["square"] == (960, 960)


def test_five_second_clip_is_a_real_h264_mp4(tmp_path):
    out = tmp_path / "clip.mp4"
    seen: list[float] = []
    assert animate_image(still(448, 256), out, 5, seed=7, progress=seen.append) == (1280, 720)
    assert leftovers(tmp_path) == ["clip.mp4"]
    stream, frames = decode(out)
    assert stream.codec_context.name == "h264"
    assert (stream.width, stream.height) == (1280, 720)
    assert stream.pix_fmt == "yuv420p"
    assert stream.average_rate == 24
    assert len(frames) == 5 * 24
    assert abs(float(stream.duration * stream.time_base) - 5) <= 1 / 24
    assert np.abs(frames[0] - frames[-1]).mean() > 4  # the camera has visibly moved
    steps = [np.abs(a - b).mean() for a, b in itertools.pairwise(frames)]
    assert min(steps) > 0.05  # every frame moves on; none is a repeat
    assert seen == sorted(seen) and len(seen) > 5 * 24 and seen[-1] == 1.0
    boxes = mp4_boxes(out.read_bytes())
    assert boxes.index("moov") < boxes.index("mdat")  # +faststart: playable while downloading


@pytest.mark.parametrize(("size", "expected"), [((180, 320), (720, 1280)), ((256, 256), (960, 960))])
def test_other_orientations(tmp_path, size, expected):
    out = tmp_path / "clip.mp4"
    assert animate_image(still(*size, mode="RGBA"), out, 1, seed=3) == expected
    stream, frames = decode(out)
    assert (stream.width, stream.height) == expected and len(frames) == 24


def test_same_image_and_seed_give_identical_bytes_and_seeds_differ(tmp_path):
    image = still(320, 180)
    paths = [tmp_path / name for name in ("a.mp4", "b.mp4", "c.mp4")]
    for path, seed in zip(paths, (5, 5, 6), strict=True):
        animate_image(image, path, 1, seed=seed)
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b and a != c


def test_clip_keeps_the_stills_colours(tmp_path):
    """Frames are made in YUV: a wrong range or matrix would shift every colour."""
    image = still(640, 360)
    out = tmp_path / "clip.mp4"
    animate_image(image, out, 1, seed=4)
    with av.open(str(out)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(np.float64)
    expected = pixels(image.resize((1280, 720))).mean((0, 1))
    # the view is a zoomed crop and the light sweep brightens by at most 9 %: means stay close
    assert np.all(np.abs(first.mean((0, 1)) - expected) < 12)
    dark = animate_image(Image.new("RGB", (640, 360)), tmp_path / "black.mp4", 1, seed=4)
    assert dark == (1280, 720)
    with av.open(str(tmp_path / "black.mp4")) as container:
        assert max(frame.to_ndarray(format="rgb24").max() for frame in container.decode(video=0)) <= 2  # black stays black


@pytest.mark.parametrize("size", list(OUTPUT_SIZES.values()))
def test_camera_stays_inside_the_source_and_near_rows_travel_further(size):
    """The warp's maps, for every plane and many moves: never past the source's edge (the clamp), and
    parallax: across the clip the bottom row's view moves further than the top row's."""
    width, height = size
    source_size = (2 * round(width * 1.15 / 2), 2 * round(height * 1.15 / 2))
    for seed in range(12):
        move = CameraMove.from_seed(seed)
        for scale in (1, 2):
            plane_w, plane_h = source_size[0] // scale, source_size[1] // scale
            for e in (0.0, 0.3, 1.0):
                map_x, map_y = camera_maps(source_size, size, scale, move, e)
                assert map_x.shape == map_y.shape == (height // scale, width // scale)
                assert map_x.min() >= -0.5 and map_x.max() <= plane_w - 0.5
                assert map_y.min() >= -0.5 and map_y.max() <= plane_h - 0.5
        (first, _), (last, _) = (camera_maps(source_size, size, 1, move, e) for e in (0.0, 1.0))
        top, bottom = (abs(last[row].mean() - first[row].mean()) for row in (0, -1))
        assert bottom > top + 0.008 * source_size[0]


def test_cancel_midway_removes_everything_quickly(tmp_path):
    out = tmp_path / "clip.mp4"
    cancel = threading.Event()
    cancelled_at: list[float] = []

    def progress(fraction: float) -> None:
        if fraction >= 0.3 and not cancel.is_set():
            cancel.set()
            cancelled_at.append(time.monotonic())

    with pytest.raises(StepCancelled):
        animate_image(still(320, 180), out, 2, seed=1, progress=progress, cancel=cancel)
    assert time.monotonic() - cancelled_at[0] < 0.5
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- objects


def test_object_words_are_parsed():
    spec = parse_prompt("A lighthouse on a basalt cliff at golden hour, waves rolling in")
    assert spec.objects == {"lighthouse"} and "water" in spec.elements
    assert parse_prompt("a paper boat drifting down a flooded street").objects == {"boat"}
    assert "water" in parse_prompt("a boat in the desert").elements  # boats need water
    balloons = parse_prompt("hot air balloons over a meadow at sunrise")
    assert balloons.objects == {"balloon"} and "balloon" in balloons.plural
    lone = parse_prompt("a lone traveler in a desert at sunset")
    assert lone.objects == {"person"} and not lone.plural
    assert parse_prompt("a cabin in a snowy forest at night").objects == {"house"}
    assert parse_prompt("a castle on a hill under the stars").objects == {"castle"}
    assert parse_prompt("misty mountains").objects == frozenset()


@pytest.mark.parametrize(
    ("with_object", "without"),
    [
        ("a lighthouse on the coast at night", "the coast at night"),
        ("a castle on a hill under the stars", "a hill under the stars"),
        ("a sailboat on a calm lake at sunset", "a calm lake at sunset"),
        ("hot air balloons over a meadow at sunrise", "a meadow at sunrise"),
    ],
)
def test_named_objects_are_drawn(with_object, without):
    """Naming an object changes a compact part of the frame: it is drawn, the setting stays the same."""
    spec = parse_prompt(with_object)
    bare_spec = parse_prompt(without)
    assert spec.objects and not bare_spec.objects
    assert spec.elements == bare_spec.elements and spec.light == bare_spec.light
    full = pixels(render_scene(with_object, 1, 896, 512))
    # the same scene (same words, so the same layout and seeds) painted without its object layers
    canvas = scene_module.Scene(spec, 1, 896, 512)
    for layer in scene_module.plan_layers(spec):
        if layer not in objects.PAINTERS.values():
            layer(canvas)
    changed = np.abs(full - pixels(canvas.to_image())).max(-1) > 25
    assert changed.mean() > 0.003  # the object is visible...
    assert changed.mean() < 0.35  # ...and it is a thing in the scene, not a repaint


def test_objects_keep_renders_deterministic():
    prompt = "a windmill, a cabin and a lone tree on a hill with birds and a car, at dusk"
    first = render_scene(prompt, 9, 640, 360).tobytes()
    assert render_scene(prompt, 9, 640, 360).tobytes() == first
    assert render_scene(prompt, 10, 640, 360).tobytes() != first


def test_object_layers_report_progress_and_honour_cancel():
    seen: list[float] = []
    render_scene("a castle and a lighthouse by the sea with boats and birds", 2, 640, 360, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 8

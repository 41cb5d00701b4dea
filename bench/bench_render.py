"""Time the `local` renderers against a baseline measured in the same run.

    python bench/bench_render.py

Baseline: encoding 120 identical 1280x720 frames with the same PyAV/libx264 settings the animator
uses - the cost no animation can avoid. Ratios make runs on different machines comparable.
Prints one "name value" pair per line; times are seconds (wall, and CPU of this process).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av
from PIL import Image

from backend.render.animate import CRF, PRESET, animate_image
from backend.render.scene import render_scene

PROMPTS = (
    "A majestic mountain landscape at golden hour",
    "a neon city at night",
    "ocean sunset",
    "a forest in fog",
    "a quiet thought",
)


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def encode_static(image: Image.Image, path: Path, frames: int = 120, fps: int = 24) -> None:
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = image.size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {"crf": CRF, "preset": PRESET}
        stream.codec_context.thread_type, stream.codec_context.thread_count = "FRAME", 2
        for index in range(frames):
            frame = av.VideoFrame.from_image(image)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def main() -> None:
    still = render_scene(PROMPTS[0], 1, 1792, 1024)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        frame = still.resize((1280, 720), Image.LANCZOS)
        base_wall, base_cpu = min(timed(lambda: encode_static(frame, tmp / "static.mp4")) for _ in range(2))
        renders = [timed(lambda p=p: render_scene(p, 7, 1792, 1024)) for p in PROMPTS]
        anim_wall, anim_cpu = timed(lambda: animate_image(still, tmp / "clip.mp4", 5, seed=7))

    render_wall = [w for w, _ in renders]
    render_cpu = [c for _, c in renders]
    rows = [
        ("baseline_static_encode_120f_wall_s", base_wall),
        ("baseline_static_encode_120f_cpu_s", base_cpu),
        ("render_scene_1792x1024_median_wall_s", statistics.median(render_wall)),
        ("render_scene_1792x1024_max_wall_s", max(render_wall)),
        ("render_scene_1792x1024_median_cpu_s", statistics.median(render_cpu)),
        ("render_scene_median_ratio", statistics.median(render_wall) / base_wall),
        ("animate_image_5s_wall_s", anim_wall),
        ("animate_image_5s_cpu_s", anim_cpu),
        ("animate_image_5s_ratio", anim_wall / base_wall),
    ]
    for name, value in rows:
        print(f"{name} {value:.3f}")


if __name__ == "__main__":
    main()

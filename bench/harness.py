"""What the benchmarks share: fixed-latency fake providers, a server launcher that uses them,
percentiles and the result lines every benchmark prints.

The fake providers stand in for the `local` ones (so no key, no price and no key check is
involved) and take a fixed time, so a benchmark measures promptreel's own work around them:
the store, the events, the queue, the API. Their output is a real, tiny PNG and MP4.

    python -m bench.harness serve --image-seconds 0 --video-seconds 0 [serve options]

starts `promptreel serve` with those providers, for benchmarks that need a server process.
"""

from __future__ import annotations

import asyncio
import io
import math
import shutil
import statistics
import sys
from collections.abc import Sequence
from fractions import Fraction
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from backend.providers.base import ImageRequest, ImageResult, StepContext, VideoRequest, VideoResult  # noqa: E402


@cache
def tiny_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


@cache
def tiny_mp4() -> bytes:
    """One second of 64x64 H.264, made once per process."""
    import av
    import numpy as np

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 24)
        frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
        for index in range(24):
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


class FixedLatencyImage:
    """An image provider that answers after `seconds`, with one progress tick half way."""

    name = "local"

    def __init__(self, seconds: float):
        self.seconds = seconds

    def model_for(self, quality: str) -> str:
        return "promptreel-scene-1"

    async def generate(self, request: ImageRequest, ctx: StepContext) -> ImageResult:
        await asyncio.sleep(self.seconds / 2)
        ctx.progress(0.5)
        await asyncio.sleep(self.seconds / 2)
        return ImageResult(png=tiny_png(), model="promptreel-scene-1")

    async def cancel_remote(self, remote_id: str) -> None:
        return None


class FixedLatencyVideo:
    """A video provider that writes its MP4 after `seconds`, with one progress tick half way."""

    name = "local"
    model = "promptreel-animate-1"

    def __init__(self, seconds: float):
        self.seconds = seconds

    async def animate(self, request: VideoRequest, ctx: StepContext) -> VideoResult:
        await asyncio.sleep(self.seconds / 2)
        ctx.progress(0.5)
        await asyncio.sleep(self.seconds / 2)
        request.output_path.write_bytes(tiny_mp4())
        return VideoResult(model=self.model, width=64, height=64)

    async def cancel_remote(self, remote_id: str) -> None:
        return None


def use_fixed_latency_providers(image_seconds: float, video_seconds: float) -> None:
    """Make every ProviderRegistry built from now on in this process use the fixed-latency
    providers as `local` (set PROMPTREEL_LOCAL_CONCURRENCY for "no provider limit")."""
    from backend.providers import registry

    tiny_png(), tiny_mp4()  # made before the clock starts
    registry.LocalImageProvider = lambda: FixedLatencyImage(image_seconds)  # type: ignore[assignment,misc]
    registry.LocalVideoProvider = lambda limits: FixedLatencyVideo(video_seconds)  # type: ignore[assignment,misc]


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (share 0.5 = median, 0.99 = p99)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summary_ms(values: Sequence[float]) -> str:
    """p50 / p99 / max of durations in seconds, in milliseconds."""
    return (
        f"p50 {percentile(values, 0.5) * 1000:.1f} ms, p99 {percentile(values, 0.99) * 1000:.1f} ms,"
        f" max {max(values) * 1000:.1f} ms"
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def result(name: str, figure: str, baseline: str, target: str, ok: bool) -> None:
    """One line per target, in the same shape from every benchmark (bench/run collects them)."""
    print(f"RESULT | {name} | {figure} | {baseline} | {target} | {verdict(ok)}", flush=True)


def free_python() -> str:
    """The interpreter to start helper processes with (the project's venv when there is one)."""
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else (shutil.which("python3") or sys.executable)


def _serve(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.harness serve")
    parser.add_argument("--image-seconds", type=float, default=0.0)
    parser.add_argument("--video-seconds", type=float, default=0.0)
    options, rest = parser.parse_known_args(argv)
    use_fixed_latency_providers(options.image_seconds, options.video_seconds)
    from app.cli import main

    sys.exit(main(["serve", *rest]))


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"]:
        sys.exit(__doc__)
    _serve(sys.argv[2:])

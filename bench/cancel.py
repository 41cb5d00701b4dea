"""How fast a cancel stops a running local video step, against the time of one frame.

    .venv/bin/python -m bench.cancel [--runs 5]

Measured: from JobService.cancel() during the video step to the job stored as cancelled; and
from setting a render's cancel event to the render thread giving up. Baseline, in the same run:
the median time between two progress ticks of the video step (about 2.4 frames), since the
thread checks the cancel between frames.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import threading
import time
from pathlib import Path

from backend.jobs.request import validate_request
from backend.providers.base import StepCancelled
from backend.render.animate import animate_image
from backend.render.scene import render_scene
from backend.settings import Settings
from backend.system import System


async def cancel_through_service(folder: Path) -> tuple[float, float]:
    """(time for cancel() to return with the job stored cancelled, median gap between frames)."""
    system = System(Settings(PROMPTREEL_DATA_DIR=folder / "data"))
    await system.start()
    request = validate_request(
        {"prompt": "a neon city at night", "provider": "local", "settings": {"videoDuration": 10, "seed": 3}}
    )
    ticks: list[float] = []
    video_running = asyncio.Event()

    def on_event(event: dict) -> None:
        data = event["data"]
        if event["type"] == "step_update" and data["id"] == "video_generation" and data["status"] == "running":
            ticks.append(time.perf_counter())
            if data["progress"] >= 10:
                video_running.set()

    system.bus.listen(on_event)
    job_id = (await system.jobs.create(request)).job.id
    await video_running.wait()
    start = time.perf_counter()
    await system.jobs.cancel(job_id)
    answered = time.perf_counter() - start
    assert system.store.get(job_id).job.status == "cancelled"
    await system.stop()
    return answered, statistics.median(b - a for a, b in itertools.pairwise(ticks))


def render_thread_stop() -> float:
    """Time from setting the cancel event (from another thread, mid-frame) to animate_image raising."""
    image = render_scene("a neon city at night", 3, 1792, 1024)
    cancel = threading.Event()
    marks: dict[str, float] = {}

    def cancel_now() -> None:
        marks["set"] = time.perf_counter()
        cancel.set()

    timer = threading.Timer(1.0, cancel_now)  # lands anywhere inside a frame
    with tempfile.TemporaryDirectory() as tmp:
        try:
            timer.start()
            animate_image(image, Path(tmp) / "clip.mp4", 10, 3, cancel=cancel)
        except StepCancelled:
            return time.perf_counter() - marks["set"]
    raise AssertionError("the render was not cancelled")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cancel")
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(runs):
            folder = Path(tmp) / str(index)
            folder.mkdir()
            results.append(asyncio.run(cancel_through_service(folder)))
    stops = [render_thread_stop() for _ in range(runs)]
    answered = [r[0] for r in results]
    frame = statistics.median(r[1] for r in results)
    print(f"one progress tick of a 10 s video (baseline): median {frame * 1000:.1f} ms")
    print(
        f"cancel() until the job is stored cancelled:   median {statistics.median(answered) * 1000:.1f} ms,"
        f" worst {max(answered) * 1000:.1f} ms over {runs} runs"
    )
    print(
        f"cancel event until the render thread stops:  median {statistics.median(stops) * 1000:.1f} ms,"
        f" worst {max(stops) * 1000:.1f} ms"
    )
    print(
        f"ratios to one tick: cancel {statistics.median(answered) / frame:.2f},"
        f" thread stop {statistics.median(stops) / frame:.2f}"
    )


if __name__ == "__main__":
    main()

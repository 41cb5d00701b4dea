"""End-to-end time of a local 5 s job, against the bare renderer in the same run.

    .venv/bin/python -m bench.job [--runs 3]

Baseline: render_scene + animate_image called directly (no store, no events, no queue).
Measured: the same prompt and seed through System -> JobService -> Pipeline, as the API runs it.
The ratio is the pipeline's overhead; the absolute times are this machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from backend.jobs.request import validate_request
from backend.render.animate import animate_image
from backend.render.scene import render_scene
from backend.settings import Settings
from backend.system import System

PROMPT = "A majestic mountain landscape at golden hour"


def bare_render(folder: Path) -> float:
    start = time.perf_counter()
    image = render_scene(PROMPT, 1, 1024, 1024)
    animate_image(image, folder / "bare.mp4", 5, 1)
    return time.perf_counter() - start


async def through_pipeline(folder: Path) -> float:
    system = System(Settings(PROMPTREEL_DATA_DIR=folder / "data"))
    await system.start()
    request = validate_request({"prompt": PROMPT, "provider": "local", "settings": {"videoDuration": 5, "seed": 1}})
    start = time.perf_counter()
    job_id = (await system.jobs.create(request)).job.id
    await system.runner.wait(job_id)
    elapsed = time.perf_counter() - start
    assert system.store.get(job_id).job.status == "completed"
    await system.stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.job")
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    bare, piped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(runs):
            folder = Path(tmp) / str(index)
            folder.mkdir()
            bare.append(bare_render(folder))
            piped.append(asyncio.run(through_pipeline(folder)))
    b, p = statistics.median(bare), statistics.median(piped)
    print(f"bare renderer, 1024x1024 image + 5 s 960x960 video: median {b:.2f} s over {runs} runs")
    print(f"local job end to end (create -> completed):         median {p:.2f} s over {runs} runs")
    print(f"ratio job / bare renderer: {p / b:.2f}")


if __name__ == "__main__":
    main()

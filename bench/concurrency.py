"""1,000 jobs submitted at once: wall time against the ideal, and the server's peak memory.

    .venv/bin/python -m bench.concurrency [--jobs 1000] [--image-seconds 1] [--video-seconds 2]

Method. One real server process (`python -m bench.harness serve`: `promptreel serve` with fixed-latency
fake providers in place of `local`, no provider limit, rate limit off, queue limit above the job
count, a fresh SQLite data folder). A client process connects to /ws, then sends all the
`POST /api/v1/generate` requests at once (64 connections) and waits for every job's
`job_completed` event, read from /ws; no sleeps.

- wall: from the first POST to the last `job_completed`;
- ideal: image + video latency (3 s), the time one job takes with no overhead at all;
- baseline, measured in the same run: the same number of asyncio tasks in this process, each
  sleeping the image latency then the video latency (what the event loop alone costs);
- peak RSS: the server process's VmHWM from /proc after the run.

Targets: wall within 1.5x of the ideal, peak RSS under 400 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp
import websockets

from bench.harness import median, percentile, result
from bench.proc_cpu import process_cpu
from tests.support.server import Server

CONNECTIONS = 64
MAX_RSS_MB = 400
MAX_RATIO = 1.5


async def bare_tasks(jobs: int, image_seconds: float, video_seconds: float) -> float:
    async def one() -> None:
        await asyncio.sleep(image_seconds)
        await asyncio.sleep(video_seconds)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(jobs)))
    return time.perf_counter() - start


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


async def submit_all(server: Server, jobs: int) -> tuple[float, list[float]]:
    """Send every job, wait for every completion; returns the wall time and each job's own time."""
    body = {"prompt": "A lighthouse on a cliff at dusk", "provider": "local", "settings": {"videoDuration": 5}}
    async with websockets.connect(server.ws_url, max_size=None) as socket:
        done: dict[str, float] = {}
        all_done = asyncio.Event()

        async def read() -> None:
            async for raw in socket:
                event = json.loads(raw)
                if event.get("type") in ("job_completed", "job_failed"):
                    if event["type"] == "job_failed":
                        raise RuntimeError(f"job failed: {event}")
                    done[event["jobId"]] = time.perf_counter()
                    if len(done) == jobs:
                        all_done.set()

        reader = asyncio.create_task(read())
        # aiohttp: a light client, so the load generator leaves the 2 cores to the server.
        connector = aiohttp.TCPConnector(limit=CONNECTIONS)
        async with aiohttp.ClientSession(server.url, connector=connector) as client:

            async def post() -> None:
                async with client.post("/api/v1/generate", json=body) as answer:
                    answer.raise_for_status()
                    await answer.read()

            start = time.perf_counter()
            await asyncio.gather(*(post() for _ in range(jobs)))
            print(f"all {jobs} POSTs answered after {time.perf_counter() - start:.2f} s")
            waiter = asyncio.create_task(all_done.wait())
            finished, _ = await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader in finished:
                reader.result()  # raises what ended the reader
            wall = max(done.values()) - start
        reader.cancel()
    return wall, [moment - start for moment in done.values()]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.concurrency", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--image-seconds", type=float, default=1.0)
    parser.add_argument("--video-seconds", type=float, default=2.0)
    options = parser.parse_args()
    ideal = options.image_seconds + options.video_seconds
    baseline = asyncio.run(bare_tasks(options.jobs, options.image_seconds, options.video_seconds))
    with tempfile.TemporaryDirectory() as folder:
        server = Server(
            Path(folder) / "data",
            command=[
                "-m",
                "bench.harness",
                "serve",
                "--image-seconds",
                str(options.image_seconds),
                "--video-seconds",
                str(options.video_seconds),
            ],
            PROMPTREEL_LOCAL_CONCURRENCY=str(options.jobs),
            PROMPTREEL_RATE_LIMIT_PER_MINUTE="0",
            PROMPTREEL_MAX_QUEUED_JOBS=str(options.jobs + 1),
        ).start()
        pid = server.process.pid  # type: ignore[union-attr]
        try:
            cpu_before = process_cpu(pid)
            wall, per_job = asyncio.run(submit_all(server, options.jobs))
            cpu = process_cpu(pid) - cpu_before
            rss = peak_rss_mb(pid)
        finally:
            server.stop()
    print(f"{options.jobs} jobs, image {options.image_seconds} s + video {options.video_seconds} s, no provider limit")
    print(f"bare asyncio tasks (same sleeps, this process): {baseline:.2f} s")
    print(f"all jobs done:                                  {wall:.2f} s  ({wall / ideal:.2f}x the ideal {ideal:.1f} s)")
    print(f"per job, POST to completed: median {median(per_job):.2f} s, p99 {percentile(per_job, 0.99):.2f} s")
    print(f"server CPU: {cpu:.2f} s in all, {cpu / options.jobs * 1000:.1f} ms per job")
    print(f"server peak RSS: {rss:.0f} MB")
    result(
        f"{options.jobs} jobs at once: wall",
        f"{wall:.2f} s ({wall / ideal:.2f}x ideal)",
        f"ideal {ideal:.1f} s; bare tasks {baseline:.2f} s",
        f"<= {MAX_RATIO}x ideal",
        wall <= MAX_RATIO * ideal,
    )
    result(f"{options.jobs} jobs at once: peak RSS", f"{rss:.0f} MB", "-", f"< {MAX_RSS_MB} MB", rss < MAX_RSS_MB)


if __name__ == "__main__":
    main()

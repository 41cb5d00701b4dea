"""Jobs per second with one `promptreel worker` and with two, on fake providers of fixed latency.

    .venv/bin/python -m bench.workers [--jobs 40] [--concurrency 4] [--runs 1]
                                            [--image-latency 0.5] [--video-seconds 1.0] [--keep]

Set-up, once: a fresh PostgreSQL database (tests.support.postgres.new_database), one API instance
(`python -m app serve`, PROMPTREEL_TASK_ENGINE=procrastinate), and the fake providers in this
process: fake OpenAI answers every DALL-E 3 image after `--image-latency` seconds, fake Runway
takes `--video-seconds` from a task's creation to SUCCEEDED however often it is polled. So a job
(dalle3 then runway, 5 s video) costs the providers a fixed image + video latency; everything
above that is promptreel's (queue, store, events, data URI, download, probe) and the machine's.
PROMPTREEL_POLL_INTERVAL is 0.05 s, PROMPTREEL_REMOTE_CONCURRENCY the worker concurrency;
heartbeats are the product's defaults.

Per measurement, on the same database and the same API instance: start 1 (then 2) fresh
`python -m app worker --concurrency C` processes, run a warm-up batch of one job per slot (not
counted: imports, connection pools, the fakes' first MP4), then submit `--jobs` jobs at once
(concurrent POST /api/v1/generate) and wait on /ws until every one has sent `job_completed`.
Stop the workers. With `--runs` > 1 the two set-ups alternate (1, 2, 1, 2, ...).

Measured:
- wall: from the first POST to the last `job_completed` heard on /ws, and jobs/s = jobs / wall;
- baseline, the ideal: jobs * per-job latency / slots (slots = workers * concurrency), i.e. the
  providers' latency with every slot busy all the time and nothing else costing anything;
- per job, from the stored events (PostgreSQL's clock, microseconds): created -> completed
  (p50, p95), and its parts: queued (created -> generating_image), image step
  (-> generating_video) and video step (-> job_completed);
- CPU seconds during the window: the API instance, the workers, this script (the fakes and the
  /ws client), PostgreSQL and the rest of the machine, against the window's capacity
  (wall * CPUs): near 100% means the CPU is the limit; a large "rest" means the machine was
  shared and the wall times are not comparable. The workers' CPU seconds per job depend little
  on who else runs: they are the figure to compare between versions of promptreel.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from bench.proc_cpu import machine_busy, process_cpu
from tests.fakes import FakeOpenAI, FakeRunway, provider_env
from tests.support.cluster import Worker, cluster_env
from tests.support.postgres import new_database
from tests.support.server import Server
from tests.support.streams import EventStream, ends_job, open_stream

JOB_TIMEOUT = 300.0


def job_request(index: int) -> dict[str, Any]:
    return {
        "prompt": f"a lighthouse in a storm, take {index}",
        "provider": "dalle3",
        "settings": {"videoProvider": "runway", "videoDuration": 5, "imageSize": "1024x1024", "seed": index},
    }


# -- CPU ------------------------------------------------------------------------------------


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process (the postmaster's cutime holds its ended backends)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    total += process_cpu(int(entry.name))
            except OSError:  # ended meanwhile
                continue
    return total


def self_cpu() -> float:
    """This process's own CPU (its threads: the fakes and the /ws client), not its children's."""
    times = os.times()
    return times.user + times.system


@dataclass
class Cpu:
    api: float
    workers: float
    script: float
    postgres: float
    rest: float

    @staticmethod
    def sample(api: Server, workers: list[Worker]) -> tuple[float, ...]:
        return process_cpu(api.process.pid), sum(process_cpu(w.pid) for w in workers), self_cpu(), postgres_cpu(), machine_busy()

    @classmethod
    def since(cls, before: tuple[float, ...], api: Server, workers: list[Worker]) -> Cpu:
        api_s, workers_s, script_s, pg_s, busy = (now - then for now, then in zip(cls.sample(api, workers), before, strict=True))
        return cls(api_s, workers_s, script_s, pg_s, busy - api_s - workers_s - script_s - pg_s)

    @property
    def total(self) -> float:
        return self.api + self.workers + self.script + self.postgres + self.rest


# -- one measurement ------------------------------------------------------------------------


@dataclass
class Measurement:
    workers: int
    slots: int
    jobs: int
    wall: float
    submit: float  # seconds until every POST had answered
    latencies: list[float]  # created -> completed, per job
    queued: list[float]
    image: list[float]
    video: list[float]
    events: list[int]  # stored events per job (each one a transaction, a NOTIFY and a /ws message)
    per_worker: list[int]
    cpu: Cpu

    @property
    def rate(self) -> float:
        return self.jobs / self.wall


class Ends:
    """Reads /ws in the background and notes when each job's last event was heard."""

    def __init__(self, stream: EventStream):
        self.stream = stream
        self.heard: dict[str, tuple[float, str]] = {}
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                event = json.loads(await self.stream.connection.recv())
                job_id = event.get("jobId")
                if job_id and ends_job(job_id)(event):
                    self.heard[job_id] = (time.perf_counter(), event["type"] if event["type"] != "job_update" else "cancelled")
                    self.changed.set()
        finally:
            self.changed.set()  # a dropped connection wakes the waiter, which reports it

    async def wait(self, job_ids: list[str], timeout: float = JOB_TIMEOUT) -> float:
        """When the last of these jobs ended (perf_counter); fails on a job that did not complete."""

        async def all_heard() -> None:
            while not all(job_id in self.heard for job_id in job_ids):
                if self.task.done():
                    self.task.result()  # the connection dropped: say why
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(all_heard(), timeout)
        except TimeoutError:
            missing = [job_id for job_id in job_ids if job_id not in self.heard]
            raise RuntimeError(f"{len(missing)} of {len(job_ids)} jobs had not ended after {timeout:.0f} s") from None
        failed = {job_id: self.heard[job_id][1] for job_id in job_ids if self.heard[job_id][1] != "job_completed"}
        if failed:
            raise RuntimeError(f"{len(failed)} jobs did not complete: {list(failed.items())[:3]}")
        return max(self.heard[job_id][0] for job_id in job_ids)

    def close(self) -> None:
        self.task.cancel()


async def submit(http: httpx.AsyncClient, count: int, first_index: int) -> list[str]:
    async def one(index: int) -> str:
        response = await http.post("/api/v1/generate", json=job_request(index))
        if not response.is_success:
            raise RuntimeError(f"POST /api/v1/generate answered {response.status_code}: {response.text[:300]}")
        return response.json()["id"]

    return list(await asyncio.gather(*(one(first_index + index) for index in range(count))))


def job_timings(engine: Any, job_ids: list[str]) -> tuple[list[float], list[float], list[float], list[float], list[int]]:
    """Per job, from its stored events (one clock): (created -> completed, queued, image step, video step,
    events)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT job_id, seq, type, data->>'status' AS status, created_at FROM job_events"
                " WHERE job_id = ANY(:ids) ORDER BY job_id, seq"
            ),
            {"ids": job_ids},
        ).all()
    marks: dict[str, dict[str, Any]] = {}
    for job_id, seq, type_, status, at in rows:
        mine = marks.setdefault(job_id, {})
        if seq == 1:
            mine["created"] = at
        if type_ == "job_update" and status in ("generating_image", "generating_video"):
            mine.setdefault(status, at)
        if type_ == "job_completed":
            mine["completed"] = at
    counts = Counter(row[0] for row in rows)
    total, queued, image, video = [], [], [], []
    for job_id in job_ids:
        m = marks[job_id]
        total.append((m["completed"] - m["created"]).total_seconds())
        queued.append((m["generating_image"] - m["created"]).total_seconds())
        image.append((m["generating_video"] - m["generating_image"]).total_seconds())
        video.append((m["completed"] - m["generating_video"]).total_seconds())
    return total, queued, image, video, [counts[job_id] for job_id in job_ids]


def jobs_per_worker(workers: list[Worker], job_ids: list[str]) -> list[int]:
    """Which worker ran each job: the media folder it wrote (each worker has its own disk here)."""
    return [sum((worker.data_dir / "media" / job_id).is_dir() for job_id in job_ids) for worker in workers]


async def measure(
    api: Server, env: dict[str, str], engine: Any, folder: Path, workers_count: int, concurrency: int, jobs: int, first_index: int
) -> Measurement:
    workers = [Worker(folder / f"worker-{index}", concurrency, **env) for index in range(workers_count)]
    stream: EventStream | None = None
    ends: Ends | None = None
    try:
        with ThreadPoolExecutor() as pool:  # side by side, as on separate hosts
            for started in [pool.submit(worker.start) for worker in workers]:
                started.result()
        stream = await open_stream(api)
        ends = Ends(stream)
        async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
            warm = await submit(http, workers_count * concurrency, first_index)
            await ends.wait(warm)

            before = Cpu.sample(api, workers)
            start = time.perf_counter()
            job_ids = await submit(http, jobs, first_index + len(warm))
            submitted = time.perf_counter() - start
            last = await ends.wait(job_ids)
            cpu = Cpu.since(before, api, workers)
        timings = job_timings(engine, job_ids)
        return Measurement(
            workers_count,
            workers_count * concurrency,
            jobs,
            last - start,
            submitted,
            *timings,
            jobs_per_worker(workers, job_ids),
            cpu,
        )
    finally:
        if ends is not None:
            ends.close()
        if stream is not None:
            await stream.connection.close()
        for worker in workers:
            worker.stop()


# -- report ---------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def report(results: dict[int, list[Measurement]], jobs: int, concurrency: int, per_job: float) -> None:
    cpus = os.cpu_count() or 1
    rows = []
    for workers, runs in results.items():
        slots = workers * concurrency
        ideal_wall = jobs * per_job / slots
        wall = statistics.median(m.wall for m in runs)
        latencies = [value for m in runs for value in m.latencies]
        rows.append(
            (
                workers,
                slots,
                wall,
                jobs / wall,
                ideal_wall,
                jobs / ideal_wall,
                percentile(latencies, 0.5),
                percentile(latencies, 0.95),
            )
        )
    print()
    print(
        f"{jobs} jobs (dalle3 + runway 5 s), per-job provider latency {per_job:.2f} s, --concurrency {concurrency}, "
        f"{len(next(iter(results.values())))} run(s), {cpus} CPUs"
    )
    header = (
        f"{'workers':>7} {'slots':>5} {'wall s':>7} {'jobs/s':>7} {'ideal s':>7} {'ideal/s':>7}"
        f" {'% ideal':>7} {'p50 s':>6} {'p95 s':>6}"
    )
    print(header)
    print("-" * len(header))
    for workers, slots, wall, rate, ideal_wall, ideal_rate, p50, p95 in rows:
        print(
            f"{workers:>7} {slots:>5} {wall:>7.2f} {rate:>7.2f} {ideal_wall:>7.2f} {ideal_rate:>7.2f} "
            f"{100 * rate / ideal_rate:>6.0f}% {p50:>6.2f} {p95:>6.2f}"
        )
    if len(rows) == 2:
        (_, _, _, one, _, ideal_one, *_), (_, _, _, two, _, ideal_two, *_) = rows
        print(f"ratio 2 workers / 1 worker: measured {two / one:.2f}, ideal {ideal_two / ideal_one:.2f}")

    print()
    print("where the time goes (medians over all jobs; per-job ideal: the fakes' fixed latencies)")
    print(f"{'workers':>7} {'queued s':>8} {'image s':>8} {'video s':>8} {'submit s':>8} {'events/job':>10}  jobs per worker")
    for workers, runs in results.items():
        queued = statistics.median(v for m in runs for v in m.queued)
        image = statistics.median(v for m in runs for v in m.image)
        video = statistics.median(v for m in runs for v in m.video)
        submit_s = statistics.median(m.submit for m in runs)
        events = statistics.median(v for m in runs for v in m.events)
        split = "; ".join("/".join(str(n) for n in m.per_worker) for m in runs)
        print(f"{workers:>7} {queued:>8.2f} {image:>8.2f} {video:>8.2f} {submit_s:>8.2f} {events:>10.0f}  {split}")

    print()
    print(f"per run: jobs/s and CPU seconds in the measured window (capacity = wall x {cpus} CPUs)")
    print(
        f"{'run':>3} {'workers':>7} {'wall s':>7} {'jobs/s':>7} {'% ideal':>7} {'API':>5} {'workers':>7} {'script':>6} "
        f"{'postgres':>8} {'rest':>5} {'busy':>5} {'worker CPU/job':>14}"
    )
    for workers, runs in results.items():
        ideal_rate = workers * concurrency / per_job
        for index, m in enumerate(runs, 1):
            c = m.cpu
            print(
                f"{index:>3} {workers:>7} {m.wall:>7.2f} {m.rate:>7.2f} {100 * m.rate / ideal_rate:>6.0f}% {c.api:>5.1f} "
                f"{c.workers:>7.1f} {c.script:>6.1f} {c.postgres:>8.1f} {c.rest:>5.1f} {100 * c.total / (m.wall * cpus):>4.0f}% "
                f"{c.workers / m.jobs:>13.2f}s"
            )
    print(
        "(script: the fake providers and the /ws client in this process; postgres: every PostgreSQL process, other "
        "databases' too; rest: everything else on the machine: a large figure means a shared machine)"
    )
    per_job_cpu = statistics.median(m.cpu.workers / m.jobs for runs in results.values() for m in runs)
    print(
        f"a worker spends {per_job_cpu:.2f} CPU s per job: at the ideal rate its {concurrency} slots would keep "
        f"{concurrency / per_job * per_job_cpu:.2f} cores busy, where one Python process's event loop runs on one core at a time"
    )


# -- the benchmark --------------------------------------------------------------------------


async def bench(args: argparse.Namespace, root: Path) -> None:
    openai = FakeOpenAI(latency=args.image_latency).start()
    runway = FakeRunway(task_seconds=args.video_seconds).start()
    try:
        with new_database() as database_url:
            env = cluster_env(
                database_url,
                **provider_env(openai=openai, runway=runway),
                PROMPTREEL_POLL_INTERVAL="0.05",
                PROMPTREEL_REMOTE_CONCURRENCY=str(args.concurrency),
                PROMPTREEL_RATE_LIMIT_PER_MINUTE="0",  # every run posts its jobs at once
                # The product's defaults, not cluster_env's quick test values: a benchmark of steady work.
                PROMPTREEL_HEARTBEAT_SECONDS="5",
                PROMPTREEL_STALLED_AFTER_SECONDS="15",
            )
            api = Server(root / "api", **env).start()
            engine = create_engine(database_url)
            results: dict[int, list[Measurement]] = {1: [], 2: []}
            index = 0
            try:
                for run in range(args.runs):
                    for workers in (1, 2):
                        m = await measure(
                            api, env, engine, root / f"run-{run}-{workers}w", workers, args.concurrency, args.jobs, index
                        )
                        index += args.jobs + workers * args.concurrency
                        results[workers].append(m)
                        print(
                            f"run {run + 1}, {workers} worker(s): {m.jobs} jobs in {m.wall:.2f} s = {m.rate:.2f} jobs/s "
                            f"(POSTs answered after {m.submit:.2f} s), jobs per worker {m.per_worker}",
                            flush=True,
                        )
            finally:
                engine.dispose()
                api.stop()
    finally:
        openai.stop()
        runway.stop()
    report(results, args.jobs, args.concurrency, args.image_latency + args.video_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40, help="jobs submitted at once per measurement (default 40)")
    parser.add_argument("--concurrency", type=int, default=4, help="each worker's --concurrency (default 4)")
    parser.add_argument("--runs", type=int, default=1, help="measurements per set-up (default 1)")
    parser.add_argument("--image-latency", type=float, default=0.5, help="fake DALL-E 3 answer time, s (default 0.5)")
    parser.add_argument("--video-seconds", type=float, default=1.0, help="fake Runway task time, s (default 1.0)")
    parser.add_argument("--keep", action="store_true", help="keep the data folders (server and worker logs)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    try:
        asyncio.run(bench(args, root))
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

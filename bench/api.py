"""API overhead: pairs per second and latency of `POST /api/v1/generate` then `GET /api/v1/jobs/{id}`,
against a bare FastAPI app doing one SQLite insert and one read.

    .venv/bin/python -m bench.api [--concurrency 16] [--warmup 3] [--seconds 10] [--runs 1]
                                        [--only baseline,held,running] [--keep-cookies]

Three servers, each started in its own process on a fresh data dir, the same Python and the same
uvicorn set-up (its default loop and HTTP protocol, uvloop and httptools, wsproto, no access log:
what NiceGUI's ui.run uses):
- baseline: a bare FastAPI app that validates the body (GenerateRequest), inserts one `jobs` row
  (the project's Job model and engine: WAL and the same pragmas), reads it back by id and answers
  it as JSON: what any FastAPI app on this stack pays at the least;
- held: `python -m bench.harness serve` (promptreel serve, fake `local` providers) whose image step takes
  an hour, with one local slot: every job waits in the queue, so the figure is the request path
  (auth, limits, request log, metrics, NiceGUI's middleware, store, events) with the runner idle;
- running: zero-latency fakes and no provider limit: every job created runs at once in the
  background (both steps, its media, store writes, events) and competes for the CPU. Its pairs/s
  is sustained: the pairs answered in the window over the window plus the time the jobs they
  created take to finish. This is the product's real overhead: the figure that counts.
Rate limit 10^9 per minute (its code runs, it never refuses), PROMPTREEL_MAX_QUEUED_JOBS 10^9.

Load: a separate process (`python -m bench.api load`) with `--concurrency` asyncio clients on aiohttp,
keep-alive, no cookie jar (a script's client, like curl or requests; --keep-cookies keeps NiceGUI's
session cookie); `--warmup` seconds not counted, then `--seconds` measured. Printed per server:
pairs/s, pair latency p50/p99, and the server's CPU ms per pair (steadier than wall time on a
shared machine).

Target: promptreel's pairs/s with its jobs running is at least half the baseline's (also shown:
the same ratio with the jobs held).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.jobs.request import GenerateRequest
from bench.harness import ROOT, free_python, percentile, result, summary_ms
from bench.proc_cpu import process_cpu
from tests.support.server import Server, free_port

TARGET_SHARE = 0.5
UNLIMITED = str(10**9)
DRAIN_TIMEOUT = 600.0
SCENARIOS = ("baseline", "held", "running")
UNFINISHED = ("pending", "generating_image", "generating_video")


def job_body(index: int) -> dict[str, Any]:
    return {
        "prompt": f"a lighthouse in a storm, take {index}",
        "provider": "local",
        "settings": {"videoProvider": "local", "videoDuration": 5, "imageSize": "1024x1024", "seed": index},
    }


# -- the baseline server --------------------------------------------------------------------------


def baseline_serve(port: int, data_dir: Path) -> None:
    """A bare FastAPI app: validate, insert one job row, read it back, answer it as JSON."""
    import secrets

    import uvicorn
    from fastapi import FastAPI, HTTPException
    from sqlmodel import Session, SQLModel

    from backend.store.database import create_db_engine
    from backend.store.models import Job

    data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(f"sqlite:///{(data_dir / 'baseline.db').resolve()}")
    SQLModel.metadata.create_all(engine, tables=[Job.__table__])  # type: ignore[attr-defined]
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/api/v1/generate", status_code=201)
    async def generate(body: GenerateRequest) -> dict:
        settings = body.settings
        job = Job(
            id="job_" + secrets.token_urlsafe(9),
            prompt=body.prompt,
            provider=body.provider,
            video_provider=settings.videoProvider or "local",
            image_size=settings.imageSize,
            video_duration=settings.videoDuration,
            quality=settings.quality,
            seed=settings.seed or 0,
        )
        with Session(engine, expire_on_commit=False) as session:
            session.add(job)
            session.commit()
        return job.model_dump(mode="json")

    @app.get("/api/v1/jobs/{job_id}")
    async def get_job(job_id: str) -> dict:
        with Session(engine) as session:
            job = session.get(Job, job_id)
        if job is None:
            raise HTTPException(404)
        return job.model_dump(mode="json")

    uvicorn.run(app, host="127.0.0.1", port=port, ws="wsproto", log_level="warning", log_config=None, access_log=False)


# -- the load generator (its own process) ---------------------------------------------------------


async def load(url: str, concurrency: int, warmup: float, seconds: float, keep_cookies: bool) -> dict[str, Any]:
    """Clients that each send pairs back to back; pairs started and ended within the window count.
    Prints START and END as the window opens and closes (the parent samples the server's CPU)."""
    import aiohttp

    latencies: list[float] = []
    failures: Counter[str] = Counter()
    start = time.perf_counter() + warmup
    end = start + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    jar = aiohttp.CookieJar() if keep_cookies else aiohttp.DummyCookieJar()

    async def client(session: aiohttp.ClientSession, number: int) -> None:
        index = number * 10**7
        while time.perf_counter() < end:
            index += 1
            began = time.perf_counter()
            try:
                async with session.post(f"{url}/api/v1/generate", json=job_body(index)) as answer:
                    job = await answer.json()
                if answer.status != 201:
                    failures[f"POST {answer.status} {job.get('code')}"] += 1
                    continue
                async with session.get(f"{url}/api/v1/jobs/{job['id']}") as answer:
                    await answer.read()
            except aiohttp.ClientError as error:  # counted, and the client goes on (a new connection)
                failures[type(error).__name__] += 1
                continue
            if answer.status != 200:
                failures[f"GET {answer.status}"] += 1
                continue
            ended = time.perf_counter()
            if began >= start and ended <= end:
                latencies.append(ended - began)

    async def mark_window() -> None:
        await asyncio.sleep(start - time.perf_counter())  # a clock: the window opens at a set time
        print("START", flush=True)
        await asyncio.sleep(end - time.perf_counter())
        print("END", flush=True)

    async with aiohttp.ClientSession(connector=connector, cookie_jar=jar) as session:
        await asyncio.gather(mark_window(), *(client(session, number) for number in range(concurrency)))
    return {"latencies": latencies, "seconds": seconds, "failures": dict(failures)}


# -- one measurement ------------------------------------------------------------------------------


@dataclass
class Measurement:
    scenario: str
    pairs: int
    seconds: float
    latencies: list[float]
    server_cpu: float  # CPU seconds of the server during the window (plus the drain, when running)
    drain: float  # seconds the jobs still took to finish after the window
    failures: dict[str, int]

    @property
    def rate(self) -> float:
        return self.pairs / (self.seconds + self.drain)

    @property
    def cpu_ms_per_pair(self) -> float:
        return self.server_cpu / max(1, self.pairs) * 1000


def start_server(scenario: str, data_dir: Path, port: int) -> Server:
    if scenario == "baseline":
        return Server(data_dir, port, command=["-m", "bench.api", "baseline-serve", "--data-dir", str(data_dir)]).start()
    image_seconds = "3600" if scenario == "held" else "0"
    command = [
        "-m",
        "bench.harness",
        "serve",
        "--image-seconds",
        image_seconds,
        "--video-seconds",
        "0",
        "--host",
        "127.0.0.1",
    ]
    return Server(
        data_dir,
        port,
        command=command,
        PROMPTREEL_LOCAL_CONCURRENCY="1" if scenario == "held" else UNLIMITED,
        PROMPTREEL_RATE_LIMIT_PER_MINUTE=UNLIMITED,
        PROMPTREEL_MAX_QUEUED_JOBS=UNLIMITED,
    ).start()


def jobs_by_status(data_dir: Path) -> dict[str, int]:
    with closing(sqlite3.connect(f"file:{data_dir / 'promptreel.db'}?mode=ro", uri=True, timeout=30)) as db:
        return dict(db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())


def wait_for_drain(data_dir: Path) -> float:
    """Seconds until no job is unfinished (the store is the only place that knows across all jobs)."""
    began = time.perf_counter()
    while any(jobs_by_status(data_dir).get(status) for status in UNFINISHED) and time.perf_counter() - began < DRAIN_TIMEOUT:
        time.sleep(0.05)  # polls the store from outside: there is no event to await here
    return time.perf_counter() - began


def measure(scenario: str, options: argparse.Namespace, workdir: Path) -> Measurement:
    port = free_port()
    data_dir = workdir / f"{scenario}-{port}"
    server = start_server(scenario, data_dir, port)
    try:
        loader = subprocess.Popen(
            [
                free_python(),
                "-m",
                "bench.api",
                "load",
                "--url",
                f"http://127.0.0.1:{port}",
                "--concurrency",
                str(options.concurrency),
                "--warmup",
                str(options.warmup),
                "--seconds",
                str(options.seconds),
                *(["--keep-cookies"] if options.keep_cookies else []),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert loader.stdout is not None
        cpu_start = cpu_end = 0.0
        for line in loader.stdout:
            if line.strip() == "START":
                cpu_start = process_cpu(server.process.pid)
            elif line.strip() == "END":
                cpu_end = process_cpu(server.process.pid)
                break
        rest = loader.stdout.read()
        if loader.wait() != 0:
            raise RuntimeError(f"the load generator failed on {scenario}")
        output = json.loads(rest)
        drain = 0.0
        if scenario == "running":
            drain = wait_for_drain(data_dir)
            cpu_end = process_cpu(server.process.pid)
            statuses = jobs_by_status(data_dir)
            if set(statuses) != {"completed"}:
                raise RuntimeError(f"not every job completed on {scenario}: {statuses} (see {server.log_path})")
        if not output["latencies"]:
            raise RuntimeError(f"no pair succeeded on {scenario}: {output['failures']}")
        return Measurement(
            scenario,
            len(output["latencies"]),
            output["seconds"],
            output["latencies"],
            cpu_end - cpu_start,
            drain,
            output["failures"],
        )
    finally:
        server.stop()
        if options.keep:
            print(f"  {scenario}'s data dir: {data_dir}", flush=True)


# -- report ---------------------------------------------------------------------------------------


def report(runs: dict[str, list[Measurement]], options: argparse.Namespace) -> None:
    rates = {scenario: statistics.median(m.rate for m in found) for scenario, found in runs.items()}
    for scenario, found in runs.items():
        latencies = [value for m in found for value in m.latencies]
        cpu = statistics.median(m.cpu_ms_per_pair for m in found)
        drain = statistics.median(m.drain for m in found)
        failures = sum((Counter(m.failures) for m in found), Counter())
        print(
            f"{scenario:>8}: {rates[scenario]:7.1f} pairs/s ({', '.join(f'{m.rate:.1f}' for m in found)}), "
            f"{summary_ms(latencies) if latencies else 'no pairs'}, server CPU {cpu:.2f} ms/pair"
            + (f", jobs drained {drain:.1f} s after the window" if scenario == "running" else "")
            + (f", failures {dict(failures)}" if failures else "")
        )
    if "baseline" not in rates:
        return
    base = rates["baseline"]
    base_cpu = statistics.median(m.cpu_ms_per_pair for m in runs["baseline"])
    base_latency = [value for m in runs["baseline"] for value in m.latencies]
    baseline_text = (
        f"bare FastAPI + SQLite insert/read {base:.0f} pairs/s, p50 {percentile(base_latency, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(base_latency, 0.99) * 1000:.1f} ms, {base_cpu:.2f} ms CPU/pair"
    )
    for scenario in ("running", "held"):
        if scenario not in rates:
            continue
        latencies = [value for m in runs[scenario] for value in m.latencies]
        share = rates[scenario] / base
        cpu = statistics.median(m.cpu_ms_per_pair for m in runs[scenario])
        label = "jobs running" if scenario == "running" else "jobs held in the queue"
        # The CPU ratio is what a free core would give: steadier than pairs/s when others share the machine.
        figure = (
            f"{rates[scenario]:.0f} pairs/s ({share:.2f}x), p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, {cpu:.2f} ms CPU/pair ({base_cpu / cpu:.2f}x), {label}"
        )
        result(
            f"api overhead ({label}, {options.concurrency} clients)",
            figure,
            baseline_text,
            f">= {TARGET_SHARE:.1f}x the baseline's pairs/s",
            share >= TARGET_SHARE,
        )


def main() -> None:
    if sys.argv[1:2] == ["baseline-serve"]:
        parser = argparse.ArgumentParser(prog="python -m bench.api baseline-serve")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--data-dir", type=Path, required=True)
        options = parser.parse_args(sys.argv[2:])
        baseline_serve(options.port, options.data_dir)
        return
    if sys.argv[1:2] == ["load"]:
        parser = argparse.ArgumentParser(prog="python -m bench.api load")
        parser.add_argument("--url", required=True)
        parser.add_argument("--concurrency", type=int, required=True)
        parser.add_argument("--warmup", type=float, required=True)
        parser.add_argument("--seconds", type=float, required=True)
        parser.add_argument("--keep-cookies", action="store_true")
        options = parser.parse_args(sys.argv[2:])
        outcome = asyncio.run(load(options.url, options.concurrency, options.warmup, options.seconds, options.keep_cookies))
        print(json.dumps(outcome), flush=True)
        return

    parser = argparse.ArgumentParser(
        prog="python -m bench.api", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=16, help="clients sending pairs at once (default 16)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the window (default 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="the measured window (default 10)")
    parser.add_argument("--runs", type=int, default=1, help="measurements per server, alternating (default 1)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="servers to measure (default baseline,held,running)")
    parser.add_argument("--keep-cookies", action="store_true", help="keep NiceGUI's session cookie, like a browser")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data dirs and logs")
    options = parser.parse_args()
    scenarios = [name for name in options.only.split(",") if name]
    if unknown := set(scenarios) - set(SCENARIOS):
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    runs: dict[str, list[Measurement]] = {scenario: [] for scenario in scenarios}
    workdir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    try:
        for _ in range(options.runs):
            for scenario in scenarios:
                measurement = measure(scenario, options, workdir)
                runs[scenario].append(measurement)
                print(f"  {scenario}: {measurement.rate:.1f} pairs/s, {measurement.cpu_ms_per_pair:.2f} ms CPU/pair", flush=True)
    finally:
        if not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report(runs, options)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

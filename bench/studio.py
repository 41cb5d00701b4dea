"""Store scaling: the studio's first page and GET /api/v1/jobs with 100, 10,000 and 100,000 jobs.

    .venv/bin/python -m bench.studio [--sizes 100,10000,100000] [--loads 7] [--requests 40] [--postgres] [--keep]

The claims checked: the studio (`/`) is usable in under 1.5 s with 10,000 jobs in the store, and
the first page of the studio and of GET /api/v1/jobs take as long with 100,000 jobs as with 100
(flat: at most 1.5 times the 100-job figure).

Method. Per size, a fresh data folder whose SQLite store is migrated to the head revision and
filled with bulk INSERTs (jobs and their two steps, not through the API): realistic rows, one a
minute back in time, 85% completed, 8% failed, 7% cancelled, owners mixed (none, alice, bob,
carol), prompts of eight words from a small vocabulary; the newest completed ones have a real
tiny PNG and MP4. No job is unfinished, so the server resumes nothing at its start. One real
server per size (`python -m app serve`, tests.support.server.Server), all started before measuring,
and every measurement taken in rounds that visit each size in turn, so a burst of load from
other processes on the machine hits all sizes alike.

- studio usable: headless Chromium (a new browser context per load: cold cache, a new NiceGUI
  client) opens `/`; the time is `performance.now()` (milliseconds since the navigation started)
  at the first animation frame where the first job card and the prompt box and the Generate
  button are visible and NiceGUI's socket has done its handshake (`window.did_handshake`),
  i.e. the page shows the list and a click on Generate would reach the server. Median of
  `--loads` loads per size.
- the store's reads behind those pages (JobStore.list with the total, count_by_status), timed in
  this process without HTTP or rendering: the cleanest view of how the queries scale. With
  `--postgres` also on PostgreSQL (one database per size, VACUUM ANALYZE after the load as
  autovacuum would do; RESULT lines for its first pages);
- GET /api/v1/jobs (the default page: 50 jobs, X-Total-Count), measured by the client on a
  kept-alive connection after one request not counted: median of `--requests`. Also at each
  size, for the record, pages of 20 as the studio reads them: a status filter
  (`?status=completed`: its index matters most for the status most jobs have), a prompt search
  (`?q=fox`, about 30% of prompts match, so every size fills the page) and the last page.

Baseline: the same measurement with 100 jobs in the store, in the same run. For "usable" it is
the most honest baseline: the page is the same (twenty cards, the pager, the header), only the
store behind it differs, so the ratio is what the store's size costs; an empty store would also
drop the cards and an unrelated static page would drop NiceGUI's start-up, which is most of the
time. Targets: usable at 10,000 jobs < 1.5 s; 10,000/100 and 100,000/100 <= 1.5 for the
studio and the default API page. The filter, search and last-page figures get the same
1.5 target but are not expected to meet it everywhere: a prompt search (LIKE '%...%') reads
every job, and the exact total (X-Total-Count, the pager) counts every matching job.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import Engine, insert, text

from backend.store.database import create_db_engine, migrate
from backend.store.jobs import JobStore
from backend.store.models import UNFINISHED_STATUSES, Job, JobStatus, JobStep, StepKind, StepStatus, utcnow
from bench.harness import result, tiny_mp4, tiny_png
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.postgres import new_database
from tests.support.server import Server

USABLE_TARGET_S = 1.5
FLAT_TARGET = 1.5
PAGE_TIMEOUT_MS = 60_000
WORDS = (
    "mountain lighthouse storm forest city neon river dawn dusk fox owl ship castle desert ocean snow "
    "glacier market harbor meadow comet orchard canyon lantern"
).split()
STATUS_WEIGHTS = {JobStatus.COMPLETED: 85, JobStatus.FAILED: 8, JobStatus.CANCELLED: 7}
OWNERS = (None, "alice", "bob", "carol")
#: The newest jobs get real media files (the first pages show their thumbnails).
WITH_MEDIA = 60
SEED_BATCH = 5000
UNFINISHED = [status.value for status in UNFINISHED_STATUSES]
#: Milliseconds by figure name, then by jobs in the store.
Figures = dict[str, dict[int, list[float]]]

#: The first card, the prompt box and Generate are visible and the socket is up: the time since navigation.
USABLE_JS = """() => {
    const shown = (selector) => { const el = document.querySelector(selector); return !!el && el.checkVisibility(); };
    return window.did_handshake === true && shown('[data-testid=job-card]') && shown('[data-testid=prompt]')
        && shown('[data-testid=generate]') ? performance.now() : false;
}"""


# -- the store ------------------------------------------------------------------------------


def sqlite_engine(data_dir: Path) -> Engine:
    """The engine of the store a server started on `data_dir` uses (settings: data_dir/promptreel.db)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return create_db_engine(f"sqlite:///{(data_dir / 'promptreel.db').resolve()}")


def seed(engine: Engine, count: int, media_dir: Path | None = None) -> float:
    """Migrate a fresh store and insert `count` jobs with their steps; returns seconds."""
    started = time.perf_counter()
    migrate(engine)
    rng = random.Random(count)
    statuses, weights = list(STATUS_WEIGHTS), list(STATUS_WEIGHTS.values())
    now = utcnow()
    with engine.begin() as connection:
        for first in range(0, count, SEED_BATCH):
            jobs, steps = [], []
            for index in range(first, min(count, first + SEED_BATCH)):
                age = count - index  # the last one inserted is the newest
                job, job_steps = job_rows(
                    f"job_seed{index:08d}", rng.choices(statuses, weights)[0], rng, now - timedelta(minutes=age)
                )
                jobs.append(job)
                steps += job_steps
                if media_dir and age <= WITH_MEDIA and job["image_path"]:
                    write_media(media_dir, job)
            connection.execute(insert(Job.__table__), jobs)
            connection.execute(insert(JobStep.__table__), steps)
    return time.perf_counter() - started


def job_rows(job_id: str, status: JobStatus, rng: random.Random, created: object) -> tuple[dict, list[dict]]:
    done = status is JobStatus.COMPLETED
    job = dict(
        id=job_id,
        prompt=" ".join(rng.choices(WORDS, k=8)),
        provider="local",
        video_provider="local",
        status=status.value,
        progress=100 if done else rng.choice((0, 40, 70)),
        image_size="1024x1024",
        video_duration=rng.choice((3, 5, 8)),
        quality="standard",
        seed=rng.randrange(2**31),
        image_model="promptreel-scene-1" if done else None,
        video_model="promptreel-animate-1" if done else None,
        extra={},
        image_path=f"{job_id}/image.png" if done else None,
        video_path=f"{job_id}/video.mp4" if done else None,
        image_cost=0.0,
        video_cost=0.0,
        error="the render stopped" if status is JobStatus.FAILED else None,
        worker_id=None,
        heartbeat_at=None,
        event_seq=0,
        owner=rng.choice(OWNERS),
        media_expired_at=None,
        created_at=created,
        updated_at=created,
    )
    step_status = {JobStatus.COMPLETED: StepStatus.COMPLETED, JobStatus.FAILED: StepStatus.FAILED}.get(
        status, StepStatus.CANCELLED
    )
    steps = [
        dict(
            job_id=job_id,
            kind=kind.value,
            status=step_status.value,
            progress=100 if done else 0,
            started_at=created,
            ended_at=created,
            remote_id=None,
            log=[],
        )
        for kind in StepKind
    ]
    return job, steps


def write_media(media_dir: Path, job: dict) -> None:
    folder = media_dir / job["id"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "image.png").write_bytes(tiny_png())
    (folder / "video.mp4").write_bytes(tiny_mp4())


# -- the measurements -----------------------------------------------------------------------


def usable_ms(browser: Browser, url: str) -> float:
    """Milliseconds from navigation start until the studio is usable (see USABLE_JS), in a new context."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url + "/", wait_until="commit")
        return float(page.wait_for_function(USABLE_JS, timeout=PAGE_TIMEOUT_MS).json_value())
    finally:
        context.close()


def request_ms(client: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed * 1000


def call_ms(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def store_probes(store: JobStore, total: int) -> dict[str, Callable[[], float]]:
    """The store's reads behind the pages, timed in this process (no HTTP, no rendering)."""
    return {
        "store.list first page (50)": lambda: call_ms(lambda: store.list(limit=50)),
        "store.list one owner's first page (20)": lambda: call_ms(lambda: store.list(limit=20, owner="alice")),
        "store.list status=completed (20)": lambda: call_ms(lambda: store.list(limit=20, statuses=["completed"])),
        "store.list search 'fox' (20)": lambda: call_ms(lambda: store.list(limit=20, search="fox")),
        "store.list last page (20)": lambda: call_ms(lambda: store.list(limit=20, offset=max(0, total - 20))),
        "store.count_by_status(unfinished)": lambda: call_ms(lambda: store.count_by_status(UNFINISHED)),
        "store.count_by_status() (all)": lambda: call_ms(store.count_by_status),
    }


def api_probes(client: httpx.Client, total: int) -> dict[str, Callable[[], float]]:
    paths = {
        "GET /api/v1/jobs": "/api/v1/jobs",
        "status filter (?status=completed&limit=20)": "/api/v1/jobs?status=completed&limit=20",
        "prompt search (?q=fox&limit=20)": "/api/v1/jobs?q=fox&limit=20",
        "last page (?offset=total-20&limit=20)": f"/api/v1/jobs?offset={max(0, total - 20)}&limit=20",
    }
    return {name: (lambda path=path: request_ms(client, path)) for name, path in paths.items()}


def in_rounds(rounds: int, probes: dict[int, dict[str, Callable[[], float]]]) -> Figures:
    """Every probe of every size once per round, after one warm-up round that is not counted: a
    burst of load from other processes then hits all sizes alike. Milliseconds by name and size."""
    figures: Figures = {}
    for round_number in range(rounds + 1):
        for size, named in probes.items():
            for name, probe in named.items():
                elapsed = probe()
                if round_number:
                    figures.setdefault(name, {}).setdefault(size, []).append(elapsed)
    return figures


def report(title: str, figures: Figures, results: set[str]) -> None:
    """Medians per size, and a RESULT line (size / baseline <= FLAT_TARGET) for the names in `results`."""
    print(f"\n{title}: median ms by jobs in the store (the first size is the baseline)")
    for name, by_size in figures.items():
        print(f"  {name}: " + ", ".join(f"{size:,}: {statistics.median(values):.2f}" for size, values in by_size.items()))
    for name, by_size in figures.items():
        if name not in results:
            continue
        (baseline_size, baseline), *others = ((size, statistics.median(values)) for size, values in by_size.items())
        for size, figure in others:
            result(
                f"{name} with {size:,} jobs / {baseline_size:,}",
                f"{figure:.1f} ms ({figure / baseline:.2f}x)",
                f"{baseline:.1f} ms",
                f"<= {FLAT_TARGET}x",
                figure / baseline <= FLAT_TARGET,
            )


def bench(sizes: list[int], loads: int, requests: int, root: Path, postgres: bool) -> None:
    engines = {size: sqlite_engine(root / f"jobs-{size}") for size in sizes}
    for size, engine in engines.items():
        print(f"seeded {size:,} jobs (SQLite) in {seed(engine, size, root / f'jobs-{size}' / 'media'):.1f} s")
    report(
        "SQLite, in this process",
        in_rounds(requests, {size: store_probes(JobStore(engine), size) for size, engine in engines.items()}),
        set(),
    )
    for engine in engines.values():
        engine.dispose()
    if postgres:
        bench_postgres(sizes, requests)

    servers: dict[int, Server] = {}
    try:
        for size in sizes:
            servers[size] = Server(root / f"jobs-{size}").start()
        with contextlib.ExitStack() as stack:
            clients = {
                size: stack.enter_context(httpx.Client(base_url=server.url, timeout=60)) for size, server in servers.items()
            }
            api = in_rounds(requests, {size: api_probes(client, size) for size, client in clients.items()})
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            studio = in_rounds(
                loads,
                {size: {"studio usable (/)": lambda url=server.url: usable_ms(browser, url)} for size, server in servers.items()},
            )
            browser.close()
    finally:
        for server in servers.values():
            server.stop()
    figures = {**studio, **api}
    report("The server (studio in Chromium, API over HTTP)", figures, set(figures))
    if 10_000 in studio["studio usable (/)"]:
        by_size = studio["studio usable (/)"]
        usable = statistics.median(by_size[10_000]) / 1000
        result(
            "studio usable with 10,000 jobs",
            f"{usable:.2f} s",
            f"{statistics.median(by_size[sizes[0]]) / 1000:.2f} s with {sizes[0]:,} jobs",
            f"< {USABLE_TARGET_S} s",
            usable < USABLE_TARGET_S,
        )


def bench_postgres(sizes: list[int], requests: int) -> None:
    """The same store reads on PostgreSQL (a database of its own per size, dropped afterwards)."""
    with contextlib.ExitStack() as stack:
        engines = {size: create_db_engine(stack.enter_context(new_database())) for size in sizes}
        for size, engine in engines.items():
            stack.callback(engine.dispose)
            print(f"seeded {size:,} jobs (PostgreSQL) in {seed(engine, size):.1f} s")
            # What autovacuum does soon after a bulk load: planner statistics and the visibility map
            # (without it, counting from an index still reads every row to check it is visible).
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("VACUUM ANALYZE"))
        figures = in_rounds(requests, {size: store_probes(JobStore(engine), size) for size, engine in engines.items()})
    report("PostgreSQL, in this process", figures, {"store.list first page (50)", "store.list one owner's first page (20)"})


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.studio",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument(
        "--sizes", default="100,10000,100000", help="jobs in the store, comma-separated; the first is the baseline"
    )
    parser.add_argument("--loads", type=int, default=7, help="studio loads per size (median)")
    parser.add_argument("--requests", type=int, default=40, help="API requests per size and query (median)")
    parser.add_argument(
        "--postgres", action="store_true", help="also time the store's reads on PostgreSQL (seeding takes a while)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data folders (and the server logs)")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is not installed")
    sizes = [int(size) for size in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="bench-studio-"))
    started = time.perf_counter()
    try:
        bench(sizes, args.loads, args.requests, root, args.postgres)
    finally:
        print(f"total time {time.perf_counter() - started:.0f} s")
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

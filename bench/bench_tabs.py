"""Does the server slow down with many studio tabs open? Same local job, 0 tabs against N tabs.

    .venv/bin/python bench/bench_tabs.py [--tabs 40] [--runs 2] [--nice 19] [--keep]

The claim checked: "forty open studio tabs must not slow the server down noticeably".

Method. One real server (`python -m app serve`, started by tests.conftest.Server in a
subprocess with a fresh data folder). A warm-up job runs first and is not counted. Then, per
condition, the same local job (the mountain prompt, seed 1, 5 s video) is started with
POST /api/v1/generate and awaited as `job_completed` on /ws; every wait is on an event, none on
a sleep.

- baseline: no studio tab open;
- N tabs: N pages open on `/` in one headless Chromium, each page in its own browser context,
  so each is its own NiceGUI client with its own listener on the event bus and its own
  WebSocket. A tab counts as open once it shows "Your jobs" and NiceGUI's socket has done its
  handshake. After each job the script checks that every tab shows the job as Completed, so the
  tabs were really live.

The browser runs at nice 19 during the N-tab runs (`--nice 0` leaves it as is). Headless
Chromium lays out, paints and composites all N pages as if each were the visible page of its
own window (software compositing, --disable-gpu); while a job runs, forty such pages take nearly
all of two cores (about 40% in the renderers' main threads, 45% in the compositor threads), and
because the scheduler shares the CPU per thread, the server's few threads then get a small
slice: with `--nice 0` a 4 s job took 30-90 s here and /status answers took seconds. That
measures Chromium more than the server (a real browser does not paint its hidden tabs). At
nice 19 the browser mostly gets what the server leaves idle, so the server's own cost shows.

Measured per run:

- wall: from the POST to the job_completed event;
- server CPU: utime+stime of the server process and its descendants (live ones from /proc,
  reaped ones through cutime/cstime), read from /proc/<pid>/stat right before the POST and
  right after job_completed. It includes everything the server did in that window: the
  render, the events, and whatever the N tabs cost (flushes, card updates, the header's load
  timer, NiceGUI keep-alives);
- status latency: the median of a few GET /api/v1/status sent while the job runs (one each
  time a step's progress enters a new fifth), i.e. how quickly the API still answers;
- for the N-tab runs, also the server CPU until every tab shows Completed (the tabs' last
  flush comes up to 0.25 s after the event);
- who else used the CPU in the same window: this script with Playwright and Chromium, and
  every other process on the machine (busy time from /proc/stat minus both). A large "other
  processes" figure means the machine was shared and the wall times are not comparable.

How to read the ratios (N tabs / baseline). The server-CPU ratio is the meaningful one: it is
what the tabs cost the server, independent of who else uses the machine. Wall time and status
latency are measured on the same machine that runs Chromium: with N pages the browser takes
CPU of its own (parsing the updates, running the clocks), and on a two-core machine that
competes with the server's render threads, so a wall ratio above 1 can be the browser's doing,
not the server's. One caveat: a job sends about 190 events, so each tab flushes at its cap
(4 a second) for as long as the job runs; when the browser stretches the job, the tabs' share of
the server CPU grows with it. The server-CPU ratio is therefore an upper bound for a server whose
tabs live on other machines. A server-CPU ratio close to 1.00 (within the run-to-run noise, visible in the
per-run values) supports the claim; a clearly larger one puts a number on the tabs' cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from playwright.async_api import Error as PlaywrightError
from proc_cpu import children, machine_busy, tree_cpu  # noqa: E402 - bench/ is on the path as the script's folder

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, EventStream, Server, ends_job, local_job, open_stream

PROMPT = "A majestic mountain landscape at golden hour"
JOB_TIMEOUT = 180.0
PAGE_TIMEOUT_MS = 60_000
STATUS_TIMEOUT = 30.0
#: Tabs opened at the same time (the machine has two cores; all at once only makes a queue).
OPEN_CONCURRENCY = 4


# -- the browser's priority (CPU readings: bench/proc_cpu.py) ------------------------------


def renice_browser(server_pid: int, niceness: int) -> int:
    """Lower the priority of every thread this script started except the server's; returns how many."""
    changed, stack = 0, children(os.getpid())
    while stack:
        pid = stack.pop()
        if pid == server_pid:
            continue
        try:
            stack += children(pid)
            for task in Path(f"/proc/{pid}/task").iterdir():  # Linux keeps the nice value per thread
                os.setpriority(os.PRIO_PROCESS, int(task.name), niceness)
                changed += 1
        except OSError:  # ended meanwhile
            continue
    return changed


@dataclass
class CpuSplit:
    """Who used the CPU during a window: the server, this script with its browser, everything else."""

    server: float
    browser: float
    others: float

    @classmethod
    def start(cls, server_pid: int) -> tuple[float, float, float]:
        return tree_cpu(server_pid), tree_cpu(os.getpid()), machine_busy()

    @classmethod
    def since(cls, server_pid: int, before: tuple[float, float, float]) -> CpuSplit:
        server, mine, busy = (now - then for now, then in zip(cls.start(server_pid), before, strict=True))
        # the server is a child of this script: "mine" holds it, the Playwright driver and Chromium
        return cls(server, mine - server, busy - mine)


# -- one job --------------------------------------------------------------------------------

@dataclass
class Run:
    wall: float
    cpu: float
    status_ms: float
    status_count: int
    status_timeouts: int = 0
    split: CpuSplit | None = None
    settled_cpu: float | None = None  # N tabs: CPU until every tab shows the job completed
    settled_wall: float | None = None  # N tabs: seconds from job_completed until then


async def status_latency(http: httpx.AsyncClient) -> float:
    """Seconds until /api/v1/status answered; STATUS_TIMEOUT (counted as such) if it did not."""
    start = time.perf_counter()
    try:
        response = await http.get("/api/v1/status", timeout=STATUS_TIMEOUT)
    except httpx.TimeoutException:
        return STATUS_TIMEOUT
    response.raise_for_status()
    return time.perf_counter() - start


async def run_job(server: Server, http: httpx.AsyncClient, stream: EventStream, pages: list[Page]) -> Run:
    pid = server.process.pid
    probes: list[asyncio.Task[float]] = []
    seen: set[tuple[str, int]] = set()
    job_id = ""

    def watch(event: dict) -> bool:
        # While reading the events: one status request each time a step enters a new fifth.
        if event.get("jobId") == job_id and event["type"] == "step_update":
            key = (event["data"]["id"], int(event["data"].get("progress") or 0) // 20)
            if key not in seen and key[1] < 5:
                seen.add(key)
                probes.append(asyncio.create_task(status_latency(http)))
        return ends_job(job_id)(event)

    before = CpuSplit.start(pid)
    start = time.perf_counter()
    response = await http.post("/api/v1/generate", json=local_job(PROMPT, seed=1, videoDuration=5))
    response.raise_for_status()
    job_id = response.json()["id"]
    end = await stream.until(watch, timeout=JOB_TIMEOUT)
    wall = time.perf_counter() - start
    split = CpuSplit.since(pid, before)
    if end["type"] != "job_completed":
        raise RuntimeError(f"job {job_id} did not complete: {end}")
    latencies = await asyncio.gather(*probes)
    run = Run(wall, split.server, statistics.median(latencies) * 1000 if latencies else float("nan"), len(latencies),
              sum(latency >= STATUS_TIMEOUT for latency in latencies), split)
    if pages:
        for page in pages:  # the tabs were live: each shows the job finished
            status = page.locator(f'[data-job-id="{job_id}"] [data-testid=job-status]')
            await expect(status).to_have_text("Completed", timeout=PAGE_TIMEOUT_MS)
        run.settled_cpu = tree_cpu(pid) - before[0]
        run.settled_wall = time.perf_counter() - start - wall
    return run


# -- tabs ------------------------------------------------------------------------------------

@dataclass
class Tabs:
    contexts: list[BrowserContext] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def open(self, browser: Browser, url: str, count: int) -> None:
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def one() -> None:
            async with gate:
                context = await browser.new_context()
                self.contexts.append(context)
                context.set_default_timeout(PAGE_TIMEOUT_MS)
                page = await context.new_page()
                page.on("pageerror", lambda error: self.errors.append(str(error)))
                await page.goto(url + "/")
                await expect(page.get_by_text("Your jobs", exact=True)).to_be_visible(timeout=PAGE_TIMEOUT_MS)
                await page.wait_for_function("() => window.did_handshake === true")
                self.pages.append(page)

        await asyncio.gather(*(one() for _ in range(count)))

    async def close(self) -> None:
        for context in self.contexts:
            with contextlib.suppress(PlaywrightError):  # the browser may already be gone
                await context.close()
        self.contexts.clear()
        self.pages.clear()


# -- the benchmark ---------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values)


def describe(name: str, runs: list[Run]) -> None:
    walls = ", ".join(f"{r.wall:.2f}" for r in runs)
    cpus = ", ".join(f"{r.cpu:.2f}" for r in runs)
    print(f"{name}: wall median {median([r.wall for r in runs]):.2f} s ({walls}); "
          f"server CPU median {median([r.cpu for r in runs]):.2f} s ({cpus}); "
          f"GET /api/v1/status median {median([r.status_ms for r in runs]):.1f} ms "
          f"({sum(r.status_count for r in runs)} requests, {sum(r.status_timeouts for r in runs)} timed out "
          f"after {STATUS_TIMEOUT:.0f} s and counted as {STATUS_TIMEOUT:.0f} s)")
    print(f"{name}: during the job the browser (with this script) used median "
          f"{median([r.split.browser for r in runs]):.2f} s CPU, other processes on the machine "
          f"{median([r.split.others for r in runs]):.2f} s")


def log_problems(server: Server) -> list[str]:
    """The server log's top-level error lines (an error message, a traceback's final exception)."""
    if not server.log_path.exists():
        return []
    pattern = re.compile(r"\berror\b|^\w*(Error|Exception)\b", re.IGNORECASE)
    lines = server.log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if line[:1].strip() and pattern.search(line)]


async def bench(tabs: int, runs: int, niceness: int, data_dir: Path) -> None:
    server = Server(data_dir)
    started = time.perf_counter()
    tab_set = Tabs()
    problems_while_open: int | None = None
    try:
        server.start()
        print(f"server pid {server.process.pid} at {server.url}, {os.cpu_count()} CPUs, data in {data_dir}")
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http, async_playwright() as playwright:
            stream = await open_stream(server)
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                warm = await run_job(server, http, stream, [])
                print(f"warm-up job (not counted): wall {warm.wall:.2f} s, server CPU {warm.cpu:.2f} s")

                baseline = [await run_job(server, http, stream, []) for _ in range(runs)]
                describe("0 tabs (baseline)", baseline)

                opening = time.perf_counter()
                cpu_before = tree_cpu(server.process.pid)
                await tab_set.open(browser, server.url, tabs)
                print(f"opened {len(tab_set.pages)} tabs in {time.perf_counter() - opening:.1f} s "
                      f"(server CPU {tree_cpu(server.process.pid) - cpu_before:.2f} s to serve them)")
                if niceness:
                    count = renice_browser(server.process.pid, niceness)
                    print(f"browser at nice {niceness} ({count} threads): it mostly gets the CPU the server leaves idle")

                loaded = [await run_job(server, http, stream, tab_set.pages) for _ in range(runs)]
                describe(f"{tabs} tabs", loaded)
                settled = median([r.settled_cpu for r in loaded])
                print(f"{tabs} tabs: server CPU until every tab shows Completed, median {settled:.2f} s "
                      f"(every tab showed it {median([r.settled_wall for r in loaded]):.2f} s after job_completed)")

                b_wall, b_cpu, b_status = (median([getattr(r, k) for r in baseline]) for k in ("wall", "cpu", "status_ms"))
                t_wall, t_cpu, t_status = (median([getattr(r, k) for r in loaded]) for k in ("wall", "cpu", "status_ms"))
                print(f"ratio {tabs} tabs / baseline: server CPU {t_cpu / b_cpu:.2f}, "
                      f"wall {t_wall / b_wall:.2f}, status latency {t_status / b_status:.2f}")
                print(f"ratio {tabs} tabs / baseline, server CPU until the tabs settled: {settled / b_cpu:.2f}")
                print("note: the server-CPU ratio is the meaningful one. Chromium runs on this same "
                      f"{os.cpu_count()}-core machine and its {tabs} pages use CPU of their own, which "
                      "competes with the server's render threads, so the wall and latency ratios include "
                      "the browser's load (less of it at a higher --nice), not only the server's.")
                if tab_set.errors:
                    print(f"page errors in the tabs: {len(tab_set.errors)}, first: {tab_set.errors[0]}")
            finally:
                problems_while_open = len(log_problems(server))
                await tab_set.close()
                await browser.close()
                await stream.connection.close()
    finally:
        server.stop()
        problems = log_problems(server)
        when = f" ({problems_while_open} of them before the tabs were closed)" if problems_while_open is not None else ""
        print(f"server log {server.log_path}: {len(problems)} error lines{when}")
        for line, count in Counter(problems).most_common():
            print(f"  {count} x {line[:200]}")
        print(f"total time {time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tabs", type=int, default=40)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--nice", type=int, default=19, help="the browser's nice value in the tab runs (0: as is)")
    parser.add_argument("--keep", action="store_true", help="keep the data folder (and the server log)")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="bench-tabs-"))
    try:
        asyncio.run(bench(args.tabs, args.runs, args.nice, tmp / "data"))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Run the benchmark suite, one benchmark after the other, and print the results table.

    scripts/bench                    # the suite: api, concurrency, fanout, render, studio, tabs
    scripts/bench render api         # some of them
    scripts/bench --all              # also the older single-purpose ones (job, cancel, workers)
    scripts/bench --output out.md    # also write the table there

Each benchmark runs in its own process, on its own fresh data folder, and prints one
`RESULT | name | figure | baseline | target | MET/NOT MET` line per target (bench/harness.py);
this script collects those lines into a Markdown table headed by the machine and the commit.
Benchmarks are not tests: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The suite (issue 7's targets), with the options each runs with here.
SUITE = {
    "api": [],
    "concurrency": [],
    "fanout": [],
    "render": [],
    "studio": [],
    "tabs": ["--tabs", "20", "--jobs", "50", "--image-seconds", "1", "--video-seconds", "2"],
}
OLDER = {"job": [], "cancel": [], "workers": []}


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    memory_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return (
        f"{os.cpu_count()} cores ({model}), {memory_kb / 1024 / 1024:.0f} GiB,"
        f" Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def commit() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return (found.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty else "")


def run(name: str, arguments: list[str]) -> tuple[list[list[str]], int, float]:
    """Run one benchmark, echoing its output; its RESULT rows, exit code and duration."""
    print(f"\n=== bench.{name} {' '.join(arguments)} ===", flush=True)
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", f"bench.{name}", *arguments],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    rows = []
    assert process.stdout is not None
    for line in process.stdout:
        print(line, end="", flush=True)
        if line.startswith("RESULT |"):
            rows.append([cell.strip() for cell in line.strip().split("|")[1:]])
    return rows, process.wait(), time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: {' '.join(SUITE)})")
    parser.add_argument("--all", action="store_true", help=f"also {' '.join(OLDER)}")
    parser.add_argument("--output", type=Path, help="write the Markdown table to this file too")
    options = parser.parse_args()
    known = {**SUITE, **OLDER}
    names = options.names or [*SUITE, *(OLDER if options.all else ())]
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)} (known: {' '.join(known)})")
    table = ["| benchmark | figure | baseline (same run) | target | |", "|---|---|---|---|---|"]
    failures = []
    for name in names:
        rows, code, seconds = run(name, known[name])
        table += [f"| {' | '.join(row)} |" for row in rows]
        print(f"=== bench.{name}: exit {code}, {seconds:.0f} s ===", flush=True)
        if code != 0:
            failures.append(name)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    report = "\n".join([f"Machine: {machine()}", f"Commit: {commit()}, run {stamp}", "", *table, ""])
    print("\n" + report)
    if options.output:
        options.output.write_text(report)
    if failures:
        print(f"benchmarks that did not finish: {', '.join(failures)}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

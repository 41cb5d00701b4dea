"""CPU seconds from /proc, for the benchmarks: a process, a process tree, the whole machine."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def stat_ticks(pid: int) -> tuple[int, int]:
    """(utime+stime, cutime+cstime) of one process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()  # the name in brackets may hold spaces
    # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14..17
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def process_cpu(pid: int) -> float:
    """CPU seconds of one process (its threads) and its reaped children; 0 once it has ended."""
    try:
        return sum(stat_ticks(pid)) / TICKS
    except OSError:
        return 0.0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process, its live descendants and its reaped children."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            own, reaped = stat_ticks(current)
            stack += children(current)
        except OSError:  # a descendant that ended meanwhile: its time is in its parent's cutime
            continue
        total += own + reaped
    return total / TICKS


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy, all cores (/proc/stat minus idle and iowait)."""
    with open("/proc/stat") as handle:
        values = [int(value) for value in handle.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) / TICKS

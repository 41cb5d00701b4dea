"""The queue protocol: what JobService needs from wherever jobs wait and run."""

from __future__ import annotations

from typing import Protocol


class JobQueue(Protocol):
    """Where jobs wait and run: this process's JobRunner, or procrastinate's workers (procrastinate_queue.py)."""

    async def enqueue(self, job_id: str) -> None: ...

    def runs_new_jobs_as(self) -> str | None:
        """The worker id a new job is stored as already claimed by, when it will run in this
        process (saves the claim's own transaction); None when a worker elsewhere claims it."""

    async def cancel(self, job_id: str) -> None:
        """Stop the job wherever it runs and wait until that has been recorded."""

    async def is_busy(self, job_id: str) -> bool:
        """Whether some process still runs (or is stopping) the job."""

    def counts(self) -> tuple[int, int, int]:
        """(running, waiting, processes alive that run jobs)."""

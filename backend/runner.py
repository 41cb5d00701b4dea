"""JobRunner: the in-process queue. One asyncio task per job, per-provider concurrency limits.

A job waits in the queue while every slot of its step's provider is taken. On start the
runner picks up every job the last process left pending or running; on shutdown it
interrupts its jobs without marking them, so the next start resumes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .models import StepKind
from .pipeline import REMOTE_CANCEL_TIMEOUT, Pipeline
from .providers.retry import CREATE_GRACE_SECONDS
from .settings import Settings

log = logging.getLogger(__name__)
#: How long a cancel waits for a job to stop: a create call on the wire may take its grace
#: period to answer, then the remote work it started is cancelled too.
CANCEL_WAIT_SECONDS = CREATE_GRACE_SECONDS + REMOTE_CANCEL_TIMEOUT + 5.0


class JobRunner:
    def __init__(self, pipeline: Pipeline, settings: Settings):
        self.pipeline = pipeline
        self.settings = settings
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._limits: dict[tuple[StepKind, str], asyncio.Semaphore] = {}
        self.waiting = 0  # jobs queued for a slot
        self.running = 0  # steps holding a slot

    def _limit(self, kind: StepKind, provider: str) -> asyncio.Semaphore:
        key = (kind, provider)
        if key not in self._limits:
            size = self.settings.local_concurrency if provider == "local" else self.settings.remote_concurrency
            self._limits[key] = asyncio.Semaphore(size)
        return self._limits[key]

    @asynccontextmanager
    async def slot(self, kind: StepKind, provider: str) -> AsyncIterator[None]:
        semaphore = self._limit(kind, provider)
        self.waiting += 1
        try:
            await semaphore.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            semaphore.release()

    def submit(self, job_id: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self.pipeline.run(job_id, self.slot), name=f"job {job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda done: self._finished(job_id, done))
        return task

    def _finished(self, job_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.pop(job_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("job %s's task ended with an error", job_id, exc_info=task.exception())

    def is_running(self, job_id: str) -> bool:
        return job_id in self._tasks

    async def cancel(self, job_id: str) -> None:
        """Stop a job's task, if it has one here, and wait until it has ended."""
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_WAIT_SECONDS)

    async def wait(self, job_id: str) -> None:
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.wait({task})

    def resume_unfinished(self) -> list[str]:
        """Queue again every job the last process left pending or running."""
        job_ids = [job_id for job_id in self.pipeline.store.unfinished_ids() if job_id not in self._tasks]
        for job_id in job_ids:
            log.info("resuming job %s", job_id)
            self.submit(job_id)
        return job_ids

    async def shutdown(self) -> None:
        self.pipeline.stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_WAIT_SECONDS)

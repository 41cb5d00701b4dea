"""JobRunner: the in-process queue. One asyncio task per job, per-provider concurrency limits.

A job waits in the queue while every slot of its step's provider is taken. Each process that
runs jobs (the server, `promptreel generate`) claims them in the store and beats a heartbeat
while it runs them, so two processes never run the same job: the server picks up, at its start
and then whenever it beats, only the unfinished jobs that no live process owns. On shutdown it
interrupts its jobs without marking them and releases them, so the next start resumes them.

A cancel recorded by another process reaches the job's task here three ways: its `job_update`
event (PostgreSQL: every instance hears every event, within milliseconds), the heartbeat (which
answers the cancelled jobs; the fallback, e.g. for `promptreel generate` on SQLite), and the
pipeline's own next write, which finds the job finished (JobStore) and stops the run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from backend.jobs.pipeline import REMOTE_CANCEL_TIMEOUT, Pipeline
from backend.providers.retry import CREATE_GRACE_SECONDS
from backend.settings import Settings
from backend.store.models import StepKind, utcnow

log = logging.getLogger(__name__)
#: How long a cancel waits for a job to stop: a create call on the wire may take its grace
#: period to answer, then the remote work it started is cancelled too.
CANCEL_WAIT_SECONDS = CREATE_GRACE_SECONDS + REMOTE_CANCEL_TIMEOUT + 5.0


class JobRunner:
    def __init__(self, pipeline: Pipeline, settings: Settings):
        self.pipeline = pipeline
        self.store = pipeline.store
        self.settings = settings
        self.worker_id = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
        #: Whether each heartbeat also adopts jobs whose owner died (the server does; `generate` does not).
        self.adopts_orphans = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._limits: dict[tuple[StepKind, str], asyncio.Semaphore] = {}
        self.waiting = 0  # jobs queued for a slot
        self.running = 0  # steps holding a slot
        pipeline.bus.listen(self._on_event)

    def _on_event(self, event: dict[str, Any]) -> None:
        """A job cancelled by another process (its `job_update`, heard on the bus): stop its task here."""
        if event["type"] == "job_update" and event["data"].get("status") == "cancelled" and event["jobId"] in self._tasks:
            self._stop(event["jobId"])

    def _stop(self, job_id: str) -> None:
        task = self._tasks.get(job_id)
        if task is not None and not task.done() and not task.cancelling():
            task.cancel()

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

    def _stale_before(self) -> datetime:
        return utcnow() - timedelta(seconds=self.settings.stalled_after_seconds)

    def submit(self, job_id: str, *, claimed: bool = False) -> asyncio.Task[None] | None:
        """Run a job here, unless another live process runs it already (then None); `claimed`: the
        job was stored as this process's already."""
        if job_id in self._tasks:
            return self._tasks[job_id]
        if not claimed and not self.store.claim(job_id, self.worker_id, self._stale_before()):
            return None
        self.start_heartbeat()
        task = asyncio.create_task(self.pipeline.run(job_id, self.slot), name=f"job {job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda done: self._finished(job_id, done))
        return task

    def start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="job heartbeat")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)  # a clock, not a wait for an event
            try:
                for job_id in self.store.heartbeat(self.worker_id, list(self._tasks)):
                    self._stop(job_id)  # cancelled by another process: stop it here too
                if self.adopts_orphans:
                    self.resume_unfinished()
            except Exception:  # the store may be down for a moment: beat again next time
                log.exception("heartbeat failed")

    def _finished(self, job_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.pop(job_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("job %s's task ended with an error", job_id, exc_info=task.exception())

    def is_running(self, job_id: str) -> bool:
        return job_id in self._tasks

    async def run_here(self, job_id: str) -> None:
        """Run a job in the calling task (a procrastinate worker's), once this process holds its
        lease: a process that still beats for it (or has not yet been silent long enough to be
        taken for dead) keeps it until then."""
        while not self.store.claim(job_id, self.worker_id, self._stale_before()):
            record = self.store.get(job_id)
            if record is None or record.job.job_status.finished:
                return
            await asyncio.sleep(self.settings.heartbeat_seconds)  # the lease is time-based: a clock, not an event
        self.start_heartbeat()
        task = asyncio.current_task()
        assert task is not None
        self._tasks[job_id] = task
        try:
            await self.pipeline.run(job_id, self.slot)
        finally:
            self._tasks.pop(job_id, None)
            if self.pipeline.stopping:  # interrupted, not ended: free for the next worker at once
                self.store.release(self.worker_id, [job_id])

    # -- the queue interface JobService uses (see backend/jobs/procrastinate_queue.py for the cluster's) --------

    async def enqueue(self, job_id: str) -> None:
        self.submit(job_id, claimed=True)  # JobService stored it as ours (runs_new_jobs_as)

    def runs_new_jobs_as(self) -> str | None:
        return self.worker_id

    async def is_busy(self, job_id: str) -> bool:
        return self.is_running(job_id)

    def counts(self) -> tuple[int, int, int]:
        """(steps running, jobs waiting for a slot, processes running jobs: this one)."""
        return self.running, self.waiting, 1

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
        """Queue again every unfinished job that no live process owns (a stop or a crash left it)."""
        resumed = []
        for job_id in self.store.unfinished_ids(self._stale_before()):
            if job_id not in self._tasks and self.submit(job_id) is not None:
                log.info("resuming job %s", job_id)
                resumed.append(job_id)
        return resumed

    async def shutdown(self) -> None:
        self.pipeline.stopping = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        interrupted = dict(self._tasks)
        for task in interrupted.values():
            task.cancel()
        if interrupted:
            await asyncio.wait(interrupted.values(), timeout=CANCEL_WAIT_SECONDS)
            self.store.release(self.worker_id, interrupted)

"""ProcrastinateQueue: jobs deferred to procrastinate on PostgreSQL, run by `promptreel worker`.

API instances defer one procrastinate job per promptreel job, with the job id as both its
`queueing_lock` (never queued twice) and its `lock` (never run twice at once). A worker runs
it with its JobRunner, which also holds the job's lease in the store, as the in-process
runner does. A cancel is procrastinate's abort: the worker cancels the job's coroutine, the
pipeline records the cancel and cancels the provider's remote task.

Recovery, on every worker, every heartbeat:
- procrastinate jobs whose worker stopped beating (SIGKILL, a dead host) go back to `todo`,
  and the next worker resumes the job where its steps left it (a remote task is polled again);
- unfinished jobs that no live process owns and that have no procrastinate job waiting or
  running (the API crashed before deferring, a worker stopped mid-job, a store that ran
  jobs in-process before) are deferred again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.schema import SchemaManager
from sqlalchemy import Engine, text

from backend.events.bus import EventBus
from backend.events.relay import psycopg_conninfo
from backend.jobs.runner import CANCEL_WAIT_SECONDS, JobRunner
from backend.settings import Settings
from backend.store.jobs import JobStore
from backend.store.models import ACTIVE_STATUSES, UNFINISHED_STATUSES, JobStatus, utcnow

log = logging.getLogger(__name__)

TASK_NAME = "promptreel.run_job"
QUEUE_NAME = "promptreel"
#: A job younger than this may still be being deferred by the instance that created it.
DEFER_GRACE_SECONDS = 5.0


def build_app(database_url: str) -> procrastinate.App:
    connector = procrastinate.PsycopgConnector(conninfo=psycopg_conninfo(database_url), min_size=1, max_size=8)
    app = procrastinate.App(connector=connector)

    @app.task(name=TASK_NAME, queue=QUEUE_NAME, pass_context=True)
    async def run_job(context: procrastinate.JobContext, *, job_id: str) -> None:
        runner: JobRunner = context.additional_context["runner"]
        try:
            await runner.run_here(job_id)
        except asyncio.CancelledError:
            if runner.pipeline.stopping:  # this worker stops: queue the job for another one at once
                with contextlib.suppress(Exception):
                    await asyncio.shield(defer(app, job_id))
            raise  # procrastinate records the job aborted

    return app


async def defer(app: procrastinate.App, job_id: str) -> None:
    try:
        await app.tasks[TASK_NAME].configure(lock=job_id, queueing_lock=job_id).defer_async(job_id=job_id)
    except AlreadyEnqueued:
        pass  # already waiting for a worker


def ensure_schema(engine: Engine) -> None:
    """Create procrastinate's tables once; the advisory lock keeps two starting processes apart."""
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('procrastinate_schema'))"))
        if connection.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar() is None:
            # On the driver's connection, in this transaction: psycopg runs a query without parameters as
            # it is, where SQLAlchemy would read the schema's '%' signs as placeholders.
            driver_connection = connection.connection.driver_connection
            assert driver_connection is not None  # an open connection has its psycopg connection
            driver_connection.execute(SchemaManager.get_schema())


class ProcrastinateQueue:
    def __init__(self, settings: Settings, engine: Engine, store: JobStore, runner: JobRunner, bus: EventBus):
        assert settings.database_url is not None
        self.settings = settings
        self.engine = engine
        self.store = store
        self.runner = runner
        self.bus = bus
        self.app = build_app(settings.database_url)
        self._opened = False

    async def open(self) -> None:
        await self.app.open_async()
        self._opened = True

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            await self.app.close_async()

    # -- what JobService asks of a queue ------------------------------------------------------

    async def enqueue(self, job_id: str) -> None:
        await defer(self.app, job_id)

    def runs_new_jobs_as(self) -> str | None:
        return None  # the worker that takes it claims it

    async def cancel(self, job_id: str) -> None:
        """Abort the job's procrastinate job; wait until its worker has recorded the cancel."""
        manager = self.app.job_manager
        waiting = await manager.list_jobs_async(lock=job_id, status="todo", queue=QUEUE_NAME)
        running = await manager.list_jobs_async(lock=job_id, status="doing", queue=QUEUE_NAME)
        finished, stop_listening = self._finished_event(job_id)
        try:
            for job in [*waiting, *running]:
                assert job.id is not None  # a listed job is stored, so it has its id
                await manager.cancel_job_by_id_async(job.id, abort=True)
            if running and self._owner_alive(job_id):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), CANCEL_WAIT_SECONDS)
        finally:
            stop_listening()

    async def is_busy(self, job_id: str) -> bool:
        return bool(await self.app.job_manager.list_jobs_async(lock=job_id, status="doing", queue=QUEUE_NAME))

    def counts(self) -> tuple[int, int, int]:
        """Across the cluster: (jobs generating, jobs waiting to start, workers alive). Read from the
        jobs themselves, so a cancelled job stops counting the moment it is recorded cancelled."""
        by_status = self.store.count_by_status([status.value for status in UNFINISHED_STATUSES])  # their index range only
        running = sum(by_status.get(status.value, 0) for status in ACTIVE_STATUSES)
        with self.engine.connect() as connection:
            workers = connection.execute(
                text("SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > now() - make_interval(secs => :seconds)"),
                {"seconds": self.settings.stalled_after_seconds},
            ).scalar_one()
        return running, by_status.get(JobStatus.PENDING.value, 0), workers

    # -- helpers ------------------------------------------------------------------------------

    def _owner_alive(self, job_id: str) -> bool:
        record = self.store.get(job_id)
        if record is None or record.job.job_status.finished:
            return False
        beat = record.job.heartbeat_at
        return beat is not None and (utcnow() - beat).total_seconds() < self.settings.stalled_after_seconds

    def _finished_event(self, job_id: str) -> tuple[asyncio.Event, Callable[[], None]]:
        """An Event set when the job's end is heard on the bus (from whichever instance ran it),
        and the function that stops listening."""
        finished = asyncio.Event()

        def on_event(event: dict[str, Any]) -> None:
            if event["jobId"] == job_id and (
                event["type"] in ("job_completed", "job_failed")
                or (event["type"] == "job_update" and event["data"].get("status") == "cancelled")
            ):
                finished.set()

        stop_listening = self.bus.listen(on_event)
        record = self.store.get(job_id)
        if record is None or record.job.job_status.finished:
            finished.set()  # it ended before we listened
        return finished, stop_listening

    # -- recovery, run by every worker --------------------------------------------------------

    async def recover(self) -> None:
        """One round: stalled procrastinate jobs back to `todo`, orphaned promptreel jobs deferred."""
        manager = self.app.job_manager
        for job in await manager.get_stalled_jobs(queue=QUEUE_NAME, seconds_since_heartbeat=self.settings.stalled_after_seconds):
            try:
                await manager.retry_job(job)
                log.warning("job %s: its worker stopped beating; queued again", job.lock)
            except Exception as error:  # another worker retried it first, or deferred it anew
                log.info("stalled job %s not retried here: %s", job.lock, error)
        for job_id in self._orphans():
            log.warning("job %s: no worker has it; queued again", job_id)
            await defer(self.app, job_id)

    def _orphans(self) -> list[str]:
        statuses = [status.value for status in UNFINISHED_STATUSES]
        with self.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT j.id FROM jobs j"
                    " WHERE j.status = ANY(:statuses) AND j.created_at < now() - make_interval(secs => :grace)"
                    " AND (j.worker_id IS NULL OR j.heartbeat_at IS NULL"
                    " OR j.heartbeat_at < now() - make_interval(secs => :stalled))"
                    " AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs p"
                    "   WHERE p.lock = j.id AND p.queue_name = :queue AND p.status IN ('todo', 'doing'))"
                    " ORDER BY j.created_at"
                ),
                {
                    "statuses": statuses,
                    "grace": DEFER_GRACE_SECONDS,
                    "stalled": self.settings.stalled_after_seconds,
                    "queue": QUEUE_NAME,
                },
            ).all()
        return [row[0] for row in rows]

    async def run_worker(self, concurrency: int) -> None:
        """Run jobs until cancelled; recovery rounds run beside it."""
        recovery = asyncio.create_task(self._recover_forever(), name="recovery")
        try:
            await self.app.run_worker_async(
                name=self.runner.worker_id,
                queues=[QUEUE_NAME],
                concurrency=concurrency,
                install_signal_handlers=False,  # the worker command owns SIGTERM/SIGINT
                additional_context={"runner": self.runner},
                update_heartbeat_interval=self.settings.heartbeat_seconds,
                stalled_worker_timeout=self.settings.stalled_after_seconds,
                shutdown_graceful_timeout=0,  # a stopping worker hands its jobs on at once
                delete_jobs="always",  # promptreel's own table is the history
            )
        finally:
            recovery.cancel()
            await asyncio.gather(recovery, return_exceptions=True)

    async def _recover_forever(self) -> None:
        while True:
            try:
                await self.recover()
            except Exception:  # the database may be away for a moment: next round
                log.exception("recovery round failed")
            await asyncio.sleep(self.settings.heartbeat_seconds)  # a clock, not a wait for an event

"""Pipeline: runs one job, image step then video step, and tells the world as it goes.

Every state change and the events that tell of it are stored in one transaction (`transition`)
and delivered once it has committed, on the event loop's thread, so that per job the events come
out in order and a reader who reacts to an event finds the store already saying the same.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any

from sqlalchemy import Connection

from . import pricing, public
from .events import EventBus
from .media import MediaStorageError, MediaStore
from .models import Job, JobStatus, JobStep, StepKind, StepStatus, utcnow
from .providers.base import ImageRequest, ProviderError, StepCancelled, VideoRequest
from .providers.registry import ProviderRegistry, ProviderUnavailable
from .store import JobStore

log = logging.getLogger(__name__)

#: Share of the job's progress that each step carries (the video takes longest).
STEP_WEIGHTS = {StepKind.IMAGE: 0.3, StepKind.VIDEO: 0.7}
#: The job progress already earned when a step starts (the steps before it, complete).
STEP_OFFSETS = {StepKind.IMAGE: 0.0, StepKind.VIDEO: 100 * STEP_WEIGHTS[StepKind.IMAGE]}
#: The job's status while each step runs.
STEP_JOB_STATUS = {StepKind.IMAGE: JobStatus.GENERATING_IMAGE, StepKind.VIDEO: JobStatus.GENERATING_VIDEO}
#: How long the provider's remote cancel may take; the job is recorded cancelled before it (s).
REMOTE_CANCEL_TIMEOUT = 10.0

#: Waits for a free slot of (step kind, provider); the runner owns the limits.
SlotFactory = Callable[[StepKind, str], AbstractAsyncContextManager[None]]


def _provider_name(job: Job, kind: StepKind) -> str:
    return job.provider if kind is StepKind.IMAGE else job.video_provider


def _output_path(job: Job, kind: StepKind) -> str | None:
    return job.image_path if kind is StepKind.IMAGE else job.video_path


async def _store_in_thread(function: Callable[..., str], *args: Any) -> str:
    """Run a media write in a thread; a cancel waits for it, so no file lands after the job ended."""
    write = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(write)
    except asyncio.CancelledError:
        await asyncio.wait([write])
        if not write.cancelled():
            write.exception()  # retrieved and dropped: the cancel is what ends the job
        raise


def _job_percent(kind: StepKind, step_percent: int) -> int:
    """The job's progress while `kind` is at `step_percent`: 100 is kept for a completed job."""
    return min(99, int(STEP_OFFSETS[kind] + STEP_WEIGHTS[kind] * step_percent))


class StepRun:
    """The StepContext a provider gets: progress, log and remote id of one running step."""

    def __init__(self, pipeline: Pipeline, job_id: str, kind: StepKind, progress: int, remote_id: str | None, *, resumed: bool = False):
        self.pipeline = pipeline
        self.resumed = resumed
        self.job_id = job_id
        self.kind = kind
        self.percent = progress
        self.remote_id = remote_id
        self.cancel_event = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def _on_loop(self, function: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            function(*args)
        else:  # called from a render thread
            self._loop.call_soon_threadsafe(function, *args)

    def progress(self, fraction: float, message: str | None = None) -> None:
        self._on_loop(self._set_progress, fraction, message)

    def log(self, message: str) -> None:
        self._on_loop(self.pipeline._log_step, self.job_id, self.kind, message)

    async def save_remote_id(self, remote_id: str) -> None:
        self.remote_id = remote_id
        self.pipeline.store.update_step(self.job_id, self.kind, remote_id=remote_id)
        self.pipeline._log_step(self.job_id, self.kind, f"remote id {remote_id}")

    def _set_progress(self, fraction: float, message: str | None) -> None:
        if message:
            self.pipeline._log_step(self.job_id, self.kind, message)
        percent = max(0, min(99, int(fraction * 100)))  # 100 only once the step's output is stored
        if percent <= self.percent or self.cancel_event.is_set():
            return
        self.percent = percent
        self.pipeline._step_progress(self.job_id, self.kind, percent)


class Pipeline:
    def __init__(self, store: JobStore, bus: EventBus, media: MediaStore, providers: ProviderRegistry):
        self.store = store
        self.bus = bus
        self.media = media
        self.providers = providers
        #: Set while the process shuts down: interrupted jobs stay as they are, to resume at the next start.
        self.stopping = False

    # -- publishing -----------------------------------------------------------------

    @contextmanager
    def transition(self, job_id: str) -> Iterator[tuple[Connection, list[tuple[str, dict[str, Any]]]]]:
        """A state change of one job and the events that tell of it, stored in one transaction and
        delivered once it has committed: a reader who reacts to them finds the store saying the same.
        The block must not await (it holds SQLite's write lock)."""
        events: list[tuple[str, dict[str, Any]]] = []
        with self.store.transaction() as connection:
            yield connection, events
            stored = self.bus.record(job_id, events, connection)
        self.bus.announce(stored)

    def _publish_job(self, job: Job) -> None:
        self.bus.publish("job_update", job.id, public.job_update_data(job))

    def _log_step(self, job_id: str, kind: StepKind, message: str) -> None:
        self.store.append_log(job_id, kind, f"{public.iso(utcnow())} {message}")

    def _update_step(self, job_id: str, kind: StepKind, **fields: Any) -> None:
        step = self.store.update_step(job_id, kind, **fields)
        self.bus.publish("step_update", job_id, public.step_data(step))

    def _step_progress(self, job_id: str, kind: StepKind, percent: int) -> None:
        # One transaction per tick: the step's progress and the job's, which never goes down.
        with self.transition(job_id) as (connection, events):
            step, job = self.store.record_progress(job_id, kind, percent, _job_percent(kind, percent), connection=connection)
            events.append(("step_update", public.step_data(step)))
            if job is not None:  # the job's progress went up too
                events.append(("job_update", public.job_update_data(job)))

    def _set_job_status(self, job_id: str, status: JobStatus, **fields: Any) -> Job:
        job = self.store.update_job(job_id, status=status.value, **fields)
        self._publish_job(job)
        return job

    # -- running --------------------------------------------------------------------

    async def run(self, job_id: str, slot: SlotFactory) -> None:
        record = self.store.get(job_id)
        if record is None or record.job.job_status.finished:
            return
        job = record.job
        running: StepRun | None = None  # the step that holds a slot right now
        try:
            for kind in StepKind:
                step = record.step(kind)
                if step.status == StepStatus.COMPLETED and await asyncio.to_thread(self.media.exists, _output_path(job, kind)):
                    continue  # done before a restart: never made (or paid for) twice
                async with slot(kind, _provider_name(job, kind)):
                    running = self._start_step(job, step)
                    job = await self._run_step(job, running)
                    running = None
            self._complete_job(job_id)
        except asyncio.CancelledError:
            if running is not None:
                running.cancel_event.set()  # stops a render thread at its next frame
            if self.stopping:
                raise  # interrupted, not cancelled: the next start resumes the job
            await self._end_safely(job_id, self._cancel(job_id, running))
            raise
        except (ProviderError, ProviderUnavailable, pricing.UnknownPrice, StepCancelled, MediaStorageError) as error:
            await self._end_safely(job_id, self._fail(job_id, running, str(error)))
        except Exception as error:  # a bug must still end the job, with the reason kept
            log.exception("job %s failed unexpectedly", job_id)
            await self._end_safely(job_id, self._fail(job_id, running, f"internal error: {error}"))

    async def _end_safely(self, job_id: str, ending: Awaitable[None]) -> None:
        """Run a job's last transition; if even that breaks (the store is down), say so on the bus."""
        try:
            await ending
        except Exception as error:
            log.exception("could not record the end of job %s", job_id)
            # The store still says the job runs: the next start resumes it. Clients hear it ended here.
            self.bus.publish("job_failed", job_id, {"id": job_id, "status": JobStatus.FAILED.value, "error": f"internal error: {error}"})

    def _start_step(self, job: Job, step: JobStep) -> StepRun:
        if self.store.status(job.id) in (None, JobStatus.CANCELLED.value):
            raise asyncio.CancelledError()  # cancelled by another process while this one queued it
        kind = step.step_kind
        resumed = step.status == StepStatus.RUNNING  # it was running when the last process stopped
        with self.transition(job.id) as (connection, events):
            updated_job = self.store.update_job(job.id, connection=connection, status=STEP_JOB_STATUS[kind].value)
            updated_step = self.store.update_step(
                job.id, kind, connection=connection, status=StepStatus.RUNNING.value, started_at=step.started_at or utcnow()
            )
            events += [("job_update", public.job_update_data(updated_job)), ("step_update", public.step_data(updated_step))]
        if resumed:
            self._log_step(job.id, kind, "resumed after a restart" + (f" (remote id {step.remote_id})" if step.remote_id else ""))
        # Local work restarts from zero after a restart; its step progress starts over with it.
        return StepRun(self, job.id, kind, step.progress if step.remote_id else 0, step.remote_id, resumed=resumed)

    async def _run_step(self, job: Job, run: StepRun) -> Job:
        """Make the step's output, store it with its cost, and give back the updated job."""
        if run.kind is StepKind.IMAGE:
            width, height = (int(part) for part in job.image_size.split("x"))
            request = ImageRequest(prompt=job.prompt, width=width, height=height, quality=job.quality, seed=job.seed)
            image = await self.providers.image(job.provider).generate(request, run)
            relative = await _store_in_thread(self.media.write_image, job.id, image.png)
            cost = pricing.image_cost(job.provider, image.model, job.image_size, job.quality)
            fields = {"image_path": relative, "image_model": image.model, "image_cost": cost, "extra": {**job.extra, **image.metadata}}
        else:
            # Providers work on local files; with S3 media, staging is a temporary folder.
            with self.media.staging(job.id) as staging:
                image_path = await asyncio.to_thread(self.media.local_file, job.image_path, staging)
                if image_path is None:
                    raise ProviderError(job.video_provider, "the image to animate is missing from the media store")
                output = self.media.video_output(job.id, staging)
                request = VideoRequest(prompt=job.prompt, image_path=image_path, duration=job.video_duration, seed=job.seed, output_path=output)
                video = await self.providers.video(job.video_provider).animate(request, run)
                relative = await _store_in_thread(self.media.commit_video, job.id, output)
            cost = pricing.video_cost(job.video_provider, video.model, job.video_duration)
            extra = {**job.extra, **video.metadata, "videoWidth": video.width, "videoHeight": video.height}
            fields = {"video_path": relative, "video_model": video.model, "video_cost": cost, "extra": extra}
        return self._complete_step(job.id, run.kind, fields)

    def _complete_step(self, job_id: str, kind: StepKind, fields: dict[str, Any]) -> Job:
        """Store the step's output and cost on the job and end the step, in one transaction."""
        with self.transition(job_id) as (connection, events):
            job = self.store.update_job(job_id, connection=connection, **fields)
            step, raised = self.store.record_progress(
                job_id, kind, 100, _job_percent(kind, 100), connection=connection, status=StepStatus.COMPLETED.value, ended_at=utcnow()
            )
            events.append(("step_update", public.step_data(step)))
            if raised is not None:
                job = raised
                events.append(("job_update", public.job_update_data(job)))
        return job

    def _complete_job(self, job_id: str) -> None:
        with self.transition(job_id) as (connection, events):
            job = self.store.update_job(job_id, connection=connection, status=JobStatus.COMPLETED.value, progress=100)
            events += [("job_update", public.job_update_data(job)), ("job_completed", public.job_completed_data(job))]

    def _close_steps(self, job_id: str, run: StepRun | None, status: StepStatus, note: str) -> None:
        """End the running step with `status` and mark the steps that never ran as cancelled."""
        if run is not None:
            self._update_step(job_id, run.kind, status=status.value, ended_at=utcnow())
            self._log_step(job_id, run.kind, note)
        record = self.store.get(job_id)
        for step in record.steps if record else ():
            if step.status == StepStatus.PENDING:
                self._update_step(job_id, step.step_kind, status=StepStatus.CANCELLED.value)

    async def _fail(self, job_id: str, run: StepRun | None, reason: str) -> None:
        self._close_steps(job_id, run, StepStatus.FAILED, f"failed: {reason}")
        kind = run.kind if run is not None else StepKind.IMAGE
        with self.transition(job_id) as (connection, events):
            job = self.store.update_job(job_id, connection=connection, status=JobStatus.FAILED.value, error=f"{kind.title.capitalize()} failed: {reason}")
            events += [("job_update", public.job_update_data(job)), ("job_failed", public.job_failed_data(job))]

    async def _cancel(self, job_id: str, run: StepRun | None) -> None:
        if run is None or not run.remote_id:
            self.mark_cancelled(job_id, run)
            return
        # Recorded at once (nothing starts the job again), announced once the provider was told
        # too: whoever waits for the end event (a DELETE on another instance) finds it all done.
        self._close_steps(job_id, run, StepStatus.CANCELLED, "cancelled")
        self.store.update_job(job_id, status=JobStatus.CANCELLED.value)
        try:
            await self._cancel_remote(job_id, run)
        finally:  # even if this task is cancelled again meanwhile: the end event must go out
            self._publish_job(self.store.get(job_id).job)  # type: ignore[union-attr]

    def mark_cancelled(self, job_id: str, run: StepRun | None = None) -> None:
        """Record a cancel: also for a job whose task never started or is gone."""
        self._close_steps(job_id, run, StepStatus.CANCELLED, "cancelled")
        self._set_job_status(job_id, JobStatus.CANCELLED)

    async def _cancel_remote(self, job_id: str, run: StepRun) -> None:
        job = self.store.get(job_id).job  # type: ignore[union-attr]
        name = _provider_name(job, run.kind)
        try:
            provider = self.providers.image(name) if run.kind is StepKind.IMAGE else self.providers.video(name)
            # Shielded: the task that runs this is itself being cancelled.
            await asyncio.wait_for(asyncio.shield(provider.cancel_remote(run.remote_id)), REMOTE_CANCEL_TIMEOUT)  # type: ignore[arg-type]
            self._log_step(job_id, run.kind, f"remote task {run.remote_id} cancelled at {name}")
        except Exception as error:  # the job stays cancelled; the log says what happened remotely
            self._log_step(job_id, run.kind, f"could not cancel remote task {run.remote_id}: {error}")

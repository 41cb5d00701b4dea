"""Pipeline: runs one job, image step then video step, and tells the world as it goes.

Every state change and the events that tell of it are stored in one transaction (`transition`)
and delivered once it has committed, on the event loop's thread, so that per job the events come
out in order and a reader who reacts to an event finds the store already saying the same.

Finished is final (see JobStore): when another process ended the job first (a cancel on another
instance), the pipeline's next write raises JobFinished and the run stops there, writing nothing
more but what `record_after_end` allows: a step result that came too late is thrown away (its
file removed), while what the provider charged for it is added to the cost, with a log line. So
is the charge of a remote task that succeeded when a cancel stopped the download of its output.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection

from backend.events.bus import EventBus
from backend.jobs import public
from backend.jobs.request import UPLOAD_PROVIDER
from backend.media.checks import MAX_IMAGE_PIXELS, MediaRejected
from backend.media.previews import clean_preview
from backend.media.store import MediaStorageError, MediaStore
from backend.providers import pricing
from backend.providers.base import ImageRequest, ImageResult, ProviderError, StepCancelled, VideoRequest
from backend.providers.registry import ProviderRegistry, ProviderUnavailable
from backend.store.jobs import COST_COLUMN, JobFinished, JobGone, JobStore
from backend.store.models import Job, JobStatus, JobStep, StepKind, StepStatus, utcnow
from backend.uploads.images import fit_picture

log = logging.getLogger(__name__)
Stored = TypeVar("Stored")

#: Share of the job's progress that each step carries (the video takes longest).
STEP_WEIGHTS = {StepKind.IMAGE: 0.3, StepKind.VIDEO: 0.7}
#: The job progress already earned when a step starts (the steps before it, complete).
STEP_OFFSETS = {StepKind.IMAGE: 0.0, StepKind.VIDEO: 100 * STEP_WEIGHTS[StepKind.IMAGE]}
#: The job's status while each step runs.
STEP_JOB_STATUS = {StepKind.IMAGE: JobStatus.GENERATING_IMAGE, StepKind.VIDEO: JobStatus.GENERATING_VIDEO}
#: How long the provider's remote cancel may take; the job is recorded cancelled before it (s).
REMOTE_CANCEL_TIMEOUT = 10.0

#: Shortest time between two stored previews of one step (s): at most two a second per job.
PREVIEW_INTERVAL = 0.5

#: Waits for a free slot of (step kind, provider); the runner owns the limits.
SlotFactory = Callable[[StepKind, str], AbstractAsyncContextManager[None]]


def _provider_name(job: Job, kind: StepKind) -> str:
    return job.provider if kind is StepKind.IMAGE else job.video_provider


def _output_path(job: Job, kind: StepKind) -> str | None:
    return job.image_path if kind is StepKind.IMAGE else job.video_path


async def _store_in_thread(function: Callable[..., Stored], *args: Any) -> Stored:
    """Run a media write in a thread; a cancel waits for it, so no file lands after the job ended."""
    write = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(write)
    except asyncio.CancelledError:
        await asyncio.wait([write])
        if not write.cancelled():
            write.exception()  # retrieved and dropped: the cancel is what ends the job
        raise


def _step_cost(job: Job, kind: StepKind, model: str, usage: dict[str, Any] | None = None) -> float:
    """What the provider charges for the step run by `model` (backend/providers/pricing.py): from
    the token `usage` it reported, for models priced per token."""
    if kind is StepKind.IMAGE:
        return pricing.image_cost(job.provider, model, job.image_size, job.quality, usage=usage)
    return pricing.video_cost(job.video_provider, model, job.video_duration)


def _media_kind(kind: StepKind) -> str:
    return "image" if kind is StepKind.IMAGE else "video"


def _job_percent(kind: StepKind, step_percent: int) -> int:
    """The job's progress while `kind` is at `step_percent`: 100 is kept for a completed job."""
    return min(99, int(STEP_OFFSETS[kind] + STEP_WEIGHTS[kind] * step_percent))


class StepRun:
    """The StepContext a provider gets: progress, log and remote id of one running step."""

    def __init__(
        self,
        pipeline: Pipeline,
        job_id: str,
        kind: StepKind,
        provider: str,
        progress: int,
        remote_id: str | None,
        *,
        resumed: bool = False,
    ):
        self.pipeline = pipeline
        self.provider = provider
        self.resumed = resumed
        self.job_id = job_id
        self.kind = kind
        self.percent = progress
        self.remote_id = remote_id
        #: The model of a remote task that succeeded, until its result reaches the pipeline: if the
        #: job ends first (a cancel during the download), its charge is recorded all the same.
        self.billed_model: str | None = None
        self.cancel_event = threading.Event()
        #: The latest preview frame not stored yet, the task that stores them, how many were stored,
        #: and whether a preview file may exist (removed when the step ends).
        self.next_preview: bytes | None = None
        self.previewer: asyncio.Task[None] | None = None
        self.previews = 0
        # Resumed: the process that ran the step before may have left a preview, gone when this run ends.
        self.preview_written = resumed
        self.previews_closed = False
        self.task = asyncio.current_task()  # the job's run, stopped when a write finds the job ended
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

    def remote_succeeded(self, model: str) -> None:
        self.billed_model = model

    def preview(self, frame: bytes) -> None:
        self._on_loop(self._take_preview, frame)

    def _take_preview(self, frame: bytes) -> None:
        if self.cancel_event.is_set() or self.previews_closed:
            return
        self.next_preview = frame  # a newer frame replaces one still waiting: only the latest is shown
        if self.previewer is None or self.previewer.done():
            self.previewer = asyncio.ensure_future(self.pipeline._store_previews(self))

    def _set_progress(self, fraction: float, message: str | None) -> None:
        if message:
            self.pipeline._log_step(self.job_id, self.kind, message)
        percent = max(0, min(99, int(fraction * 100)))  # 100 only once the step's output is stored
        if percent <= self.percent or self.cancel_event.is_set():
            return
        self.percent = percent
        try:
            self.pipeline._step_progress(self.job_id, self.kind, percent)
        except (JobFinished, JobGone):  # ended or removed by another process: stop the run here
            self.stop()

    def stop(self) -> None:
        self.cancel_event.set()  # a render thread stops at its next frame
        if self.task is not None and not self.task.done() and not self.task.cancelling():
            self.task.cancel()


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
        self.store.append_log(job_id, kind, self._line(message))  # dropped once the step ended

    @staticmethod
    def _line(message: str) -> str:
        return f"{public.iso(utcnow())} {message}"

    def _note_after_end(self, job_id: str, kind: StepKind, message: str, charge: float = 0.0) -> None:
        """A line (and a charge) about work that went on after the job ended: see JobStore.record_after_end."""
        # No event: the job's end was told already (and a `job_update` saying cancelled would read as
        # one more cancel to every runner); GET shows the cost as it stands.
        self.store.record_after_end(job_id, kind, self._line(message), charge)

    def _step_progress(self, job_id: str, kind: StepKind, percent: int) -> None:
        # One transaction per tick: the step's progress and the job's, which never goes down.
        with self.transition(job_id) as (connection, events):
            step, job = self.store.record_progress(job_id, kind, percent, _job_percent(kind, percent), connection=connection)
            events.append(("step_update", public.step_data(step)))
            if job is not None:  # the job's progress went up too
                events.append(("job_update", public.job_update_data(job)))

    # -- running --------------------------------------------------------------------

    async def run(self, job_id: str, slot: SlotFactory) -> None:
        record = self.store.get(job_id)
        if record is None or record.job.job_status.finished:
            return
        job = record.job
        running: StepRun | None = None  # the step that holds a slot right now
        try:
            for step in record.steps:  # an image-only job has no video step
                kind = step.step_kind
                if step.status == StepStatus.COMPLETED:  # done before a restart: never made (or paid for) twice
                    if not await asyncio.to_thread(self.media.exists, _output_path(job, kind)):
                        raise MediaStorageError(f"the {_media_kind(kind)} made before a restart is missing from the media store")
                    continue
                async with slot(kind, _provider_name(job, kind)):
                    running = self._start_step(job, step)
                    try:
                        job = await self._run_step(job, running, last=step is record.steps[-1])
                    finally:
                        await self._end_previews(running)
                    running = None
            if not job.job_status.finished:  # every step was done before a restart
                self._complete_job(job_id)
        except JobFinished as lost:  # ended by another process: stop, the end is theirs
            await self._stopped_elsewhere(job_id, running, lost.status)
        except JobGone:  # removed by another process while this one ran it
            await self._removed_meanwhile(job_id, running)
        except asyncio.CancelledError:
            if running is not None:
                running.cancel_event.set()  # stops a render thread at its next frame
            if self.stopping:
                raise  # interrupted, not cancelled: the next start resumes the job
            await self._end_safely(job_id, self._cancel(job_id, running))
            log.info("job %s stopped: cancelled", job_id)
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
        except JobGone:  # removed meanwhile: its end is no one's to tell (the remover said `job_removed`)
            await self._removed_meanwhile(job_id, None)
        except Exception as error:
            log.exception("could not record the end of job %s", job_id)
            # The store still says the job runs: the next start resumes it. Clients hear it ended here.
            self.bus.publish(
                "job_failed", job_id, {"id": job_id, "status": JobStatus.FAILED.value, "error": f"internal error: {error}"}
            )

    def _start_step(self, job: Job, step: JobStep) -> StepRun:
        kind = step.step_kind  # a job ended by another process while this one queued it: JobFinished below
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
        return StepRun(
            self, job.id, kind, _provider_name(job, kind), step.progress if step.remote_id else 0, step.remote_id, resumed=resumed
        )

    async def _run_step(self, job: Job, run: StepRun, *, last: bool) -> Job:
        """Make the step's output, store it with its cost, and give back the updated job (the
        last step's completes the job in the same transaction)."""
        if run.kind is StepKind.IMAGE:
            width, height = (int(part) for part in job.image_size.split("x"))
            if job.provider == UPLOAD_PROVIDER:
                image = await self._take_upload(job, width, height, run)
            else:
                request = ImageRequest(
                    prompt=job.prompt, width=width, height=height, quality=job.quality, seed=job.seed, model=job.image_model
                )
                image = await self.providers.image(job.provider).generate(request, run)
            run.billed_model = None  # the charge goes with the result now, kept or discarded
            cost = _step_cost(job, run.kind, image.model, image.usage)
            async with self._kept_or_discarded(job.id, run, cost):
                relative = await _store_in_thread(self.media.write_image, job.id, image.png)
                fields = {
                    "image_path": relative,
                    "image_model": image.model,
                    "image_cost": cost,
                    "extra": {**job.extra, **image.metadata},
                }
                return self._complete_step(job.id, run.kind, fields, last=last)
        else:
            # Providers work on local files; with S3 media, staging is a temporary folder.
            with self.media.staging(job.id) as staging:
                image_path = await asyncio.to_thread(self.media.local_file, job.image_path, staging)
                if image_path is None:
                    raise ProviderError(job.video_provider, "the image to animate is missing from the media store")
                output = self.media.video_output(job.id, staging)
                video_request = VideoRequest(
                    prompt=job.prompt,
                    image_path=image_path,
                    duration=job.video_duration,
                    seed=job.seed,
                    output_path=output,
                    model=job.video_model,
                )
                video = await self.providers.video(job.video_provider).animate(video_request, run)
                run.billed_model = None  # the charge goes with the result now, kept or discarded
                cost = _step_cost(job, run.kind, video.model)
                async with self._kept_or_discarded(job.id, run, cost):
                    relative = await _store_in_thread(self.media.commit_video, job.id, output)
                    extra = {**job.extra, **video.metadata, "videoWidth": video.width, "videoHeight": video.height}
                    fields = {"video_path": relative, "video_model": video.model, "video_cost": cost, "extra": extra}
                    return self._complete_step(job.id, run.kind, fields, last=last)
        raise AssertionError("unreachable: _kept_or_discarded re-raises")

    async def _store_previews(self, run: StepRun) -> None:
        """Store the step's latest preview frame (re-encoded: the bytes are the provider's) and tell
        of it with a `step_update` carrying `previewUrl`, at most once per PREVIEW_INTERVAL; the
        frame itself never goes into the event log."""
        while run.next_preview is not None and not run.cancel_event.is_set():
            frame, run.next_preview = run.next_preview, None
            started = time.monotonic()
            try:
                jpeg = await asyncio.to_thread(clean_preview, frame)
                run.preview_written = True
                await _store_in_thread(self.media.write_preview, run.job_id, jpeg)
            # A malformed frame may also raise SyntaxError or ValueError from Pillow's decoder: skipped too.
            except (MediaRejected, MediaStorageError, OSError, SyntaxError, ValueError) as error:
                log.warning("job %s: a preview frame was not kept: %s", run.job_id, error)
                continue
            run.previews += 1
            try:
                with self.transition(run.job_id) as (connection, events):
                    step = self.store.update_step(run.job_id, run.kind, connection=connection, progress=run.percent)
                    data = {**public.step_data(step), public.PREVIEW_URL_KEY: public.preview_url(run.job_id, run.previews)}
                    events.append(("step_update", data))
            except (JobFinished, JobGone):  # the step's own next write finds it out and stops the run
                return
            except Exception:  # a preview is not worth a job: the step's own writes meet a broken store
                log.exception("job %s: could not tell of a preview", run.job_id)
                return
            await asyncio.sleep(max(0.0, PREVIEW_INTERVAL - (time.monotonic() - started)))

    async def _end_previews(self, run: StepRun) -> None:
        """The step ended (or stopped): no more previews, and its preview file goes."""
        run.previews_closed = True
        if run.previewer is None and not run.preview_written:
            return  # the common case: nothing to wait for
        run.next_preview = None
        if run.previewer is not None and not run.previewer.done():
            run.previewer.cancel()
            await asyncio.wait([run.previewer])  # a write under way ends first (_store_in_thread)
        if run.preview_written:
            await asyncio.shield(asyncio.to_thread(self.media.remove_preview, run.job_id))

    async def _take_upload(self, job: Job, width: int, height: int, run: StepRun) -> ImageResult:
        """The image step of a job that animates a picture it was given: the user's upload, or the
        image of an image-only job (`sourceJob`: POST /api/v1/jobs/{id}/animate). No provider, no
        cost; the picture fitted to the job's size (backend/uploads/images.py), off the event loop."""
        fit = str(job.extra.get("fit", "crop"))
        source_width, source_height = int(job.extra.get("sourceWidth", 0)), int(job.extra.get("sourceHeight", 0))
        source_job = job.extra.get("sourceJob")
        if source_job is not None:
            picture = f"the image of job {source_job}"
            data = await asyncio.to_thread(self._source_copy, job, str(source_job))
        else:
            upload_id = str(job.extra.get("sourceImage"))
            picture = f"your picture {upload_id}"
            data = await asyncio.to_thread(self.media.read_upload, upload_id)
        if data is None:
            gone = "removed, or its media expired" if source_job is not None else "deleted or expired"
            raise ProviderError(UPLOAD_PROVIDER, f"{picture} is gone ({gone})")
        # The stored picture was checked when it came in: at upload (its own size is the limit here), or from
        # the image-only job's provider (under the limit every provider image is checked against).
        pixel_limit = MAX_IMAGE_PIXELS if source_job is not None else source_width * source_height
        png = await asyncio.to_thread(fit_picture, data, width, height, "contain" if fit == "contain" else "crop", pixel_limit)
        run.log(f"{picture} ({source_width}x{source_height}) fitted to {width}x{height} by {fit}: no image provider, no cost")
        return ImageResult(png=png, model=UPLOAD_PROVIDER)

    def _source_copy(self, job: Job, source_job: str) -> bytes | None:
        """The job's own copy of the image it animates (made by JobService.animate, so that the image-only
        job's removal or expiry cannot take it away); a job queued before copies were made reads the source's."""
        own = self.media.read_bytes(self.media.relative_path(job.id, "image"))
        return own if own is not None else self._image_of(source_job)

    def _image_of(self, job_id: str) -> bytes | None:
        """The PNG of a stored job (the image-only job an animate continues); None once it is gone."""
        record = self.store.get(job_id)
        if record is None or not record.job.image_path or record.job.media_expired_at is not None:
            return None
        return self.media.read_bytes(record.job.image_path)

    @asynccontextmanager
    async def _kept_or_discarded(self, job_id: str, run: StepRun, cost: float) -> AsyncIterator[None]:
        """Around storing a step's result: if the job ends first (a cancel here, or JobFinished: a
        cancel elsewhere), the result is thrown away, its file removed, and what the provider
        charged for it is still recorded, with a line in the step's log."""
        try:
            yield
        except (asyncio.CancelledError, JobFinished):
            if not self.stopping:  # a stop is no end: the next start makes the step again
                await self._discard(job_id, run, cost)
            raise

    async def _discard(self, job_id: str, run: StepRun, cost: float) -> None:
        run.cancel_event.set()
        try:  # the charge first: the file's removal (maybe an S3 call) may be cancelled again
            message = "the result came after the cancel: discarded" + (
                f"; the provider charged ${cost:.4f} for it" if cost else ""
            )
            self._note_after_end(job_id, run.kind, message, charge=cost)
        except Exception:
            log.exception("could not record the charge of job %s's discarded %s", job_id, _media_kind(run.kind))
        relative = self.media.relative_path(job_id, _media_kind(run.kind))
        await asyncio.shield(asyncio.to_thread(self.media.remove_file, relative))

    def _unfetched_charge(self, job_id: str, run: StepRun | None) -> float | None:
        """What the provider charged for a remote task that succeeded but whose output never reached
        the pipeline (the job ended during the download, or the download failed); taken once."""
        if run is None or run.billed_model is None:
            return None  # the common case: read nothing
        model, run.billed_model = run.billed_model, None
        record = self.store.get(job_id)
        if record is None:
            return None
        try:
            return _step_cost(record.job, run.kind, model)
        except pricing.UnknownPrice:  # refused before the job was made; a model changed since: logged
            log.exception("no price for job %s's unfetched %s (model %s)", job_id, _media_kind(run.kind), model)
            return None

    def _charge_unfetched(self, job_id: str, run: StepRun | None) -> None:
        """The job ended while the output of a remote task that had succeeded was still being
        fetched: the output is lost, but the provider charged for it, so that is recorded (once)."""
        try:
            cost = self._unfetched_charge(job_id, run)
            if cost is not None:
                assert run is not None
                self._note_after_end(
                    job_id,
                    run.kind,
                    f"the provider had finished this step (charged ${cost:.4f}); its result was thrown away",
                    charge=cost,
                )
        except Exception:  # the end stands either way
            log.exception("could not record the charge of job %s's unfetched step", job_id)

    def _complete_step(self, job_id: str, kind: StepKind, fields: dict[str, Any], *, last: bool) -> Job:
        """Store the step's output and cost on the job and end the step, in one transaction;
        the last step completes the job in it too. JobFinished (nothing stored) once it ended."""
        with self.transition(job_id) as (connection, events):
            if last:
                job, step = self.store.complete_job(job_id, kind, connection=connection, **fields)
                events += [
                    ("step_update", public.step_data(step)),
                    ("job_update", public.job_update_data(job)),
                    ("job_completed", public.job_completed_data(job)),
                ]
                return job
            job = self.store.update_job(job_id, connection=connection, **fields)
            step, raised = self.store.record_progress(
                job_id,
                kind,
                100,
                _job_percent(kind, 100),
                connection=connection,
                status=StepStatus.COMPLETED.value,
                ended_at=utcnow(),
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

    def _close(
        self, job_id: str, status: JobStatus, outcome: StepStatus, note: str, *, announce: bool = True, **fields: Any
    ) -> Job:
        """Finish the job and end its open steps (the running one with `outcome` and `note`), in
        one transaction with the events (`announce`: the job's too). JobFinished if it had ended."""
        with self.transition(job_id) as (connection, events):
            job, closed = self.store.close_job(job_id, status, outcome, self._line(note), connection=connection, **fields)
            events += [("step_update", public.step_data(step)) for step in closed]
            if announce:
                events.append(("job_update", public.job_update_data(job)))
                if status is JobStatus.FAILED:
                    events.append(("job_failed", public.job_failed_data(job)))
        return job

    async def _fail(self, job_id: str, run: StepRun | None, reason: str) -> None:
        kind = run.kind if run is not None else StepKind.IMAGE
        note = f"failed: {reason}"
        fields: dict[str, Any] = {"error": f"{kind.label.capitalize()} failed: {reason}"}
        charge = self._unfetched_charge(job_id, run)
        if charge is not None:  # the provider's work succeeded and was paid for; taking its result failed
            assert run is not None
            note += f" (the provider had finished this step: charged ${charge:.4f})"
            fields[COST_COLUMN[run.kind]] = charge
        if run is None:  # failed before a step ran here (a resumed job): a preview a stopped process left goes,
            # before the end is announced, so that whoever waits for it finds the preview gone
            await asyncio.shield(asyncio.to_thread(self.media.remove_preview, job_id))
        try:
            self._close(job_id, JobStatus.FAILED, StepStatus.FAILED, note, **fields)
        except JobFinished as lost:  # it ended elsewhere first (a cancel): that end stands
            await self._stopped_elsewhere(job_id, run, lost.status)

    async def _cancel(self, job_id: str, run: StepRun | None) -> None:
        remote = run is not None and bool(run.remote_id)
        try:
            # Recorded at once (nothing starts the job again); with a remote task, announced once the
            # provider was told too: whoever waits for the end event (a DELETE on another instance) finds it all done.
            job = self._close(job_id, JobStatus.CANCELLED, StepStatus.CANCELLED, "cancelled", announce=not remote)
        except JobFinished as lost:  # cancelled elsewhere first (or it ended): this process only stops
            await self._stopped_elsewhere(job_id, run, lost.status)
            return
        self._charge_unfetched(job_id, run)  # before the end is announced: GET then shows the cost
        if remote:
            assert run is not None  # `remote` says there is a run with a remote task
            try:
                await self._cancel_remote(job_id, run)
            finally:  # even if this task is cancelled again meanwhile: the end event must go out
                record = self.store.get(job_id)
                self._publish_job(record.job if record is not None else job)

    def mark_cancelled(self, job_id: str) -> Job:
        """Record a cancel for a job whose task does not run here (another process's, or none):
        JobFinished when it had ended first. Its owner, if any, learns it from the event or its
        next write, and stops (see `_stopped_elsewhere`)."""
        return self._close(job_id, JobStatus.CANCELLED, StepStatus.CANCELLED, "cancelled")

    async def _stopped_elsewhere(self, job_id: str, run: StepRun | None, status: str) -> None:
        """The job ended in another process (it is `status` now) while this one ran it: stop the
        step's work, cancel its remote task, and say so in the step's log."""
        log.info("job %s stopped: it was %s by another process", job_id, status)
        if run is None:
            return
        run.cancel_event.set()
        self._charge_unfetched(job_id, run)
        try:
            if run.remote_id:
                await self._cancel_remote(job_id, run)
            self._note_after_end(job_id, run.kind, f"stopped here: the job was {status} by another process")
        except Exception:  # the end stands either way: only this note is missing
            log.exception("could not note where job %s stopped", job_id)

    async def _cancel_remote(self, job_id: str, run: StepRun) -> None:
        self._note_after_end(job_id, run.kind, await self._tell_provider(run))

    async def _tell_provider(self, run: StepRun) -> str:
        """Cancel the step's remote task at its provider; what happened, for the step's log."""
        try:
            assert run.remote_id is not None  # only a step with a remote task gets here
            provider = self.providers.image(run.provider) if run.kind is StepKind.IMAGE else self.providers.video(run.provider)
            # Shielded: the task that runs this is itself being cancelled.
            await asyncio.wait_for(asyncio.shield(provider.cancel_remote(run.remote_id)), REMOTE_CANCEL_TIMEOUT)
            return f"remote task {run.remote_id} cancelled at {run.provider}"
        except Exception as error:  # the job stays cancelled; the log says what happened remotely
            return f"could not cancel remote task {run.remote_id}: {error}"

    async def _removed_meanwhile(self, job_id: str, run: StepRun | None) -> None:
        """The job was removed (by another process) while this one ran it: stop the step's work and
        its remote task, and take away what this process wrote after the removal took the rest."""
        log.info("job %s stopped: it was removed by another process", job_id)
        if run is not None:
            run.cancel_event.set()
            if run.remote_id:
                log.info("job %s: %s", job_id, await self._tell_provider(run))
        await asyncio.shield(asyncio.to_thread(self.media.remove_job, job_id))

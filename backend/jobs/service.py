"""JobService: what a user can do with jobs, the same for the API, the studio and the CLI.

It is the one entry for every read and write of jobs: the routes, /ws, the studio's pages and
components and the CLI reach the job store and the event log only through it, and `find` is
the one owner check they all share.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from backend.auth import LOCAL_USER, User
from backend.errors import JobBusy, JobNotCancellable, JobNotFound, PriceUnknown, ProviderNotConfigured, QueueFull
from backend.events.bus import EventBus, Subscription
from backend.events.log import Event, EventLog
from backend.jobs.budgets import Budget, Budgets
from backend.jobs.idempotency import IdempotencyKeys, KeyTaken
from backend.jobs.pipeline import Pipeline
from backend.jobs.public import job_update_data
from backend.jobs.queue import JobQueue
from backend.jobs.request import MAX_SEED, GenerateRequest
from backend.media.store import MediaStore
from backend.providers import pricing
from backend.providers.registry import REQUIRED_SETTING, ProviderRegistry, ProviderUnavailable
from backend.rate_limit import RateLimiter
from backend.store.jobs import JobFinished, JobRecord, JobStore
from backend.store.models import Job, JobStatus


def new_job_id() -> str:
    return "job_" + secrets.token_urlsafe(9)


@dataclass(frozen=True)
class SystemStatus:
    providers: dict[str, bool]
    active_jobs: int
    queue_length: int
    system_load: float
    workers_alive: int

    def public(self) -> dict[str, object]:
        return {
            **{f"{name}_available": available for name, available in self.providers.items()},
            "active_jobs": self.active_jobs,
            "queue_length": self.queue_length,
            "system_load": self.system_load,
            "workers_alive": self.workers_alive,
        }


class JobService:
    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        pipeline: Pipeline,
        providers: ProviderRegistry,
        bus: EventBus,
        media: MediaStore,
        max_queued_jobs: int = 1000,
        rate_limiter: RateLimiter | None = None,
        event_log: EventLog | None = None,
        budgets: list[Budget] | None = None,
    ):
        self.max_queued_jobs = max_queued_jobs
        #: Jobs per user per minute, for every entry point (REST, studio, CLI): they all create here.
        self.rate_limiter = rate_limiter or RateLimiter(0)
        self.store = store
        self.queue = queue
        self.pipeline = pipeline
        self.providers = providers
        self.bus = bus
        self.media = media
        self.event_log = event_log or bus.event_log
        self.idempotency_keys = IdempotencyKeys(store.engine)
        #: Spending limits (PROMPTREEL_BUDGETS), for every entry point: they all create here.
        self.budgets = Budgets(store.engine, budgets or [], self._estimate_of)

    def _check_providers(self, request: GenerateRequest) -> str:
        """The video provider to use. Refuses, before anything is stored, a provider that is not
        configured or a model without a published price (the user would pay an unknown amount)."""
        settings = request.settings
        video_provider = settings.videoProvider or self.providers.default_video_provider
        try:
            self.providers.image(request.provider)
            self.providers.video(video_provider)
        except ProviderUnavailable as error:
            raise ProviderNotConfigured(str(error), error.name, error.missing_setting) from None
        for name in (request.provider, video_provider):
            info = self.providers.info(name)
            if info.key_problem and not info.available:  # the provider itself refused the key
                message = f"Provider '{name}' is unavailable: {info.key_problem}."
                raise ProviderNotConfigured(message, name, REQUIRED_SETTING[name])
        try:
            self.estimate(request)
        except pricing.UnknownPrice as error:
            raise PriceUnknown(str(error), request.provider, video_provider) from None
        return video_provider

    def estimate(self, request: GenerateRequest) -> dict[str, float]:
        settings = request.settings
        video_provider = settings.videoProvider or self.providers.default_video_provider
        image_model = self.providers.model_for_image(request.provider, settings.quality)
        video_model = self.providers.model_for_video(video_provider)
        return pricing.estimate(
            request.provider,
            image_model,
            video_provider,
            video_model,
            settings.imageSize,
            settings.quality,
            settings.videoDuration,
        )

    def _estimate_of(self, job: Job) -> float:
        """A stored job's estimated total (budgets count it until its cost is known)."""
        try:
            image_model = self.providers.model_for_image(job.provider, job.quality)
            video_model = self.providers.model_for_video(job.video_provider)
            prices = pricing.estimate(
                job.provider, image_model, job.video_provider, video_model, job.image_size, job.quality, job.video_duration
            )
        except (pricing.UnknownPrice, ProviderUnavailable):  # a setting changed since: what it cost so far
            return job.image_cost + job.video_cost
        return prices["total"]

    async def create_once(self, request: GenerateRequest, user: User, idempotency_key: str) -> tuple[JobRecord, bool]:
        """The job this key made (True: replayed, nothing created), or a new one made under it
        (False); IdempotencyKeyReused when the key came with another request (jobs/idempotency.py)."""
        for _ in range(2):
            job_id = self.idempotency_keys.job_for(user.name, idempotency_key, request)
            if job_id is not None:
                return self.get(job_id, user), True
            try:
                return await self.create(request, user, idempotency_key=idempotency_key), False
            except KeyTaken:  # a concurrent create with this key committed first: answer its job
                continue
        raise RuntimeError("an idempotency key was taken and then not found")  # only if its job was removed meanwhile

    async def create(self, request: GenerateRequest, user: User = LOCAL_USER, idempotency_key: str | None = None) -> JobRecord:
        video_provider = self._check_providers(request)
        if self.store.count_unfinished() >= self.max_queued_jobs:
            raise QueueFull(self.max_queued_jobs)
        self.budgets.check(user.name, self.estimate(request)["total"])  # 402 BUDGET_EXCEEDED, nothing stored
        self.rate_limiter.check(user.name)  # last: a refused request (400, 503) takes no slot of the user's minute
        settings = request.settings
        seed = settings.seed if settings.seed is not None else secrets.randbelow(MAX_SEED + 1)
        job = Job(
            id=new_job_id(),
            prompt=request.prompt,
            provider=request.provider,
            video_provider=video_provider,
            status=JobStatus.PENDING.value,
            image_size=settings.imageSize,
            video_duration=settings.videoDuration,
            quality=settings.quality,
            seed=seed,
            owner=user.name,
            worker_id=self.queue.runs_new_jobs_as(),
        )
        if job.worker_id is not None:
            job.heartbeat_at = job.created_at
        with self.pipeline.transition(job.id) as (connection, events):
            record = self.store.create(job, connection=connection)
            if idempotency_key is not None:  # KeyTaken rolls the job back
                self.idempotency_keys.claim(connection, user.name, idempotency_key, request, job.id)
            events.append(("job_update", job_update_data(record.job)))
        await self.queue.enqueue(job.id)
        return record

    def find(self, job_id: str, user: User = LOCAL_USER) -> JobRecord | None:
        """The job, if `user` may see it; None when it does not exist or is someone else's.
        The one owner check: REST, /ws and the studio all ask here."""
        record = self.store.get(job_id)
        if record is None or not user.may_see(record.job.owner):
            return None
        return record

    def get(self, job_id: str, user: User = LOCAL_USER) -> JobRecord:
        """The job, if `user` may see it: another user's job answers as if it did not exist."""
        record = self.find(job_id, user)
        if record is None:
            raise JobNotFound(job_id)
        return record

    def may_see(self, job_id: str, user: User) -> bool:
        """Whether `user` may see the job's events. With authentication off every job is the local
        user's, a removed one too: nothing is read."""
        return user.name is None or self.find(job_id, user) is not None

    def events(self, job_id: str, user: User, after: int, limit: int) -> list[Event]:
        """The job's stored events numbered above `after`, in order; JobNotFound as `get`."""
        self.get(job_id, user)
        assert self.event_log is not None, "the service reads events from the bus's log"
        return self.event_log.after(job_id, after, limit)

    def subscribe(self) -> AbstractContextManager[Subscription]:
        """Every job's events as they happen, queued for one reader (/ws); filter by `may_see`."""
        return self.bus.subscribe()

    def listen(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call `callback` for every job's event as it happens (on the event loop); returns the
        function that stops it. The studio's tabs and the CLI's progress bars listen here."""
        return self.bus.listen(callback)

    def check_store(self) -> None:
        """Raise when the job store does not answer (/health)."""
        self.store.ping()

    # After the methods that annotate with the builtin `list`, which this name hides in the class body.
    def list(
        self,
        user: User = LOCAL_USER,
        *,
        statuses: Iterable[str] = (),
        search: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[JobRecord], int]:
        """One page of `user`'s jobs, newest first, in `statuses` (none: all) and with `search` in
        the prompt, and how many match in all."""
        return self.store.list(statuses=statuses, search=search, limit=limit, offset=offset, owner=user.name)

    async def cancel(self, job_id: str, user: User = LOCAL_USER) -> JobRecord:
        """Cancel the job; the answer is the truth, since finished is final (JobStore): once this
        says cancelled the job stays so, and a job that finished first answers JobNotCancellable."""
        record = self.get(job_id, user)
        if record.job.job_status.finished:
            raise JobNotCancellable(job_id, record.job.status)
        await self.queue.cancel(job_id)
        record = self.get(job_id)
        if not record.job.job_status.finished:
            # No task of ours ran it (not started, gone, or another instance's): record the cancel
            # here; an owner elsewhere hears it (its event, or its next write) and stops.
            with contextlib.suppress(JobFinished):  # it finished while we asked: that end stands
                self.pipeline.mark_cancelled(job_id)
            record = self.get(job_id)
        if record.job.job_status is not JobStatus.CANCELLED:
            raise JobNotCancellable(job_id, record.job.status)  # it finished while we asked
        return record

    async def remove(self, job_id: str, user: User = LOCAL_USER) -> None:
        """Forget a job: cancel it if it runs, then delete its row and its files."""
        record = self.get(job_id, user)
        if not record.job.job_status.finished:
            with contextlib.suppress(JobNotCancellable):  # it finished meanwhile: removed all the same
                await self.cancel(job_id, user)
        if await self.queue.is_busy(job_id):
            raise JobBusy(job_id)  # still stopping: deleting now would pull its files from under it
        self.store.delete(job_id)
        await asyncio.to_thread(self.media.remove_job, job_id)  # S3 deletes are network calls
        self.bus.publish("job_removed", job_id, {"id": job_id})

    def status(self) -> SystemStatus:
        availability = {info.name: info.available for info in self.providers.image_providers() + self.providers.video_providers()}
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
        running, waiting, workers = self.queue.counts()
        return SystemStatus(
            providers={name: availability[name] for name in ("dalle3", "flux1", "runway")},
            active_jobs=running,
            queue_length=waiting,
            system_load=round(load, 2),
            workers_alive=workers,
        )

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
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta

from sqlalchemy import Connection

from backend.auth import LOCAL_USER, User
from backend.errors import (
    ApiError,
    BatchNotFound,
    FieldInvalid,
    JobBusy,
    JobNotAnimatable,
    JobNotCancellable,
    JobNotFound,
    ModelUnavailable,
    PriceUnknown,
    ProviderNotConfigured,
    QueueFull,
)
from backend.events.bus import EventBus, Subscription
from backend.events.log import Event, EventLog
from backend.jobs.budgets import Budget, Budgets
from backend.jobs.idempotency import IdempotencyKeys, KeyTaken
from backend.jobs.pipeline import Pipeline
from backend.jobs.public import job_update_data
from backend.jobs.queue import JobQueue
from backend.jobs.request import (
    BATCH_JOBS_FIELD,
    DEFAULT_WEBHOOK_EVENTS,
    MAX_SEED,
    UPLOAD_PROVIDER,
    AnimateRequest,
    BatchListRequest,
    BatchRequest,
    GenerateRequest,
    VariantsRequest,
)
from backend.media.store import MediaStore
from backend.providers import pricing
from backend.providers.catalog import ModelEntry, canonical
from backend.providers.registry import REQUIRED_SETTING, ProviderRegistry, ProviderUnavailable
from backend.rate_limit import RateLimiter
from backend.store.batches import BatchRecord, BatchStore
from backend.store.jobs import JobFinished, JobRecord, JobStore
from backend.store.models import Batch, Job, JobStatus, utcnow
from backend.uploads.service import UploadService
from backend.webhooks.outbox import WebhookOutbox
from backend.webhooks.urls import WebhookUrlRefused


def new_job_id() -> str:
    return "job_" + secrets.token_urlsafe(9)


def new_batch_id() -> str:
    return "bat_" + secrets.token_urlsafe(9)


#: More jobs than any batch holds (MAX_BATCH_JOBS, plus the jobs animated from its images).
BATCH_READ_LIMIT = 10_000


def _for_item(error: ApiError, index: int) -> ApiError:
    """`error` about job `index` of a batch's list, its field named `jobs[index].<field>`."""
    where = f"{BATCH_JOBS_FIELD}[{index}]"
    if isinstance(error, FieldInvalid):
        return FieldInvalid(f"{where}.{error.field}", error.reason)
    field = error.details.get("field")
    error.details = {**error.details, "field": f"{where}.{field}" if field else where}
    error.message = f"{where}: {error.message}"
    return error


def variant_seeds(batch: VariantsRequest) -> list[int]:
    """The seeds of a batch's variants: s, s+1, ... from the request's seed (wrapping past MAX_SEED),
    or distinct random ones."""
    first = batch.settings.seed
    if first is not None:
        return [(first + index) % (MAX_SEED + 1) for index in range(batch.count)]
    seeds: set[int] = set()
    while len(seeds) < batch.count:
        seeds.add(secrets.randbelow(MAX_SEED + 1))
    return list(seeds)


@dataclass(frozen=True)
class ModelChoice:
    """What a request will run: its video provider and both models, as the catalog has them."""

    video_provider: str
    image: ModelEntry | None  # None: the user's own picture (settings.sourceImage), no image model
    video: ModelEntry


def _invalid(field: str, message: str) -> FieldInvalid:
    """A 422 in the shape the API's own validation errors have."""
    return FieldInvalid(field, message)


def _model(
    providers: ProviderRegistry, request: GenerateRequest, provider: str, kind: str, chosen: str | None, field: str
) -> ModelEntry:
    """The catalog entry a request runs for one step; 422 naming `field` for an id the catalog
    does not know or one of another provider or kind."""
    model_id = chosen or providers.default_model(provider, kind, request.settings.quality)
    entry = providers.catalog.get(model_id)
    where = field if chosen else f"{field} (the default of provider '{provider}')"
    if entry is None and not chosen:  # a server setting names it: nothing the client can change
        video_provider = request.settings.videoProvider or providers.default_video_provider
        message = f"no price for {provider} model {model_id!r}: it is not in the model catalog"
        raise PriceUnknown(message, request.provider, video_provider)
    if entry is None:
        raise _invalid(where, f"unknown model '{model_id}': GET /api/v1/models lists the models")
    if entry.kind != kind or entry.provider != canonical(provider):
        raise _invalid(where, f"'{model_id}' is a {entry.family} model, not a {canonical(provider)} {kind} model")
    return entry


def choose_models(providers: ProviderRegistry, request: GenerateRequest) -> ModelChoice:
    """The models a request runs, checked against what each accepts (422 naming the field); the
    CLI asks it before it opens anything."""
    settings = request.settings
    if settings.imageOnly and request.provider == UPLOAD_PROVIDER:
        raise _invalid("settings.imageOnly", "the picture is the user's upload: there is no image to make")
    video_provider = settings.videoProvider or providers.default_video_provider
    video = _model(providers, request, video_provider, "video", settings.videoModel, "settings.videoModel")
    image = None
    if request.provider == UPLOAD_PROVIDER:  # the user's picture: no image model to choose
        if settings.imageModel is not None:
            raise _invalid("settings.imageModel", "the picture is the user's upload: leave it out")
    else:
        image = _model(providers, request, request.provider, "image", settings.imageModel, "settings.imageModel")
        if settings.imageSize not in image.sizes:
            raise _invalid("settings.imageSize", f"{image.id} makes {', '.join(image.sizes)}")
        qualities = list(image.qualities) or ["standard", "high"]
        if settings.quality not in qualities:
            raise _invalid("settings.quality", f"{image.id} takes {', '.join(qualities)}")
    if settings.videoDuration not in video.durations:
        allowed = ", ".join(str(seconds) for seconds in video.durations)
        raise _invalid("settings.videoDuration", f"{video.id} makes videos of {allowed} seconds")
    return ModelChoice(video_provider, image, video)


def _image_only(prices: dict[str, float]) -> dict[str, float]:
    """The estimate of an image-only job: its image, no video."""
    return {"imageGeneration": prices["imageGeneration"], "videoGeneration": 0.0, "total": prices["imageGeneration"]}


@dataclass(frozen=True)
class SystemStatus:
    providers: dict[str, bool]
    active_jobs: int
    queue_length: int
    system_load: float
    workers_alive: int
    #: Per provider, what its models need and it lacks (ComfyUI's nodes and model files).
    missing: dict[str, str | None] = dataclass_field(default_factory=dict)

    def public(self) -> dict[str, object]:
        return {
            **{f"{name}_available": available for name, available in self.providers.items()},
            **{f"{name}_missing": missing for name, missing in self.missing.items()},
            "active_jobs": self.active_jobs,
            "queue_length": self.queue_length,
            "system_load": self.system_load,
            "workers_alive": self.workers_alive,
        }


def _upload_gone(upload_id: str) -> FieldInvalid:
    return FieldInvalid("settings.sourceImage", f"no upload with id '{upload_id}' (deleted, expired or never made)")


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
        uploads: UploadService | None = None,
        webhooks: WebhookOutbox | None = None,
        budgets: list[Budget] | None = None,
    ):
        #: The users' pictures that `settings.sourceImage` names (None: this service takes none).
        self.uploads = uploads
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
        self.webhooks = webhooks
        self.idempotency_keys = IdempotencyKeys(store.engine)
        self.batches = BatchStore(store.engine)
        #: Spending limits (PROMPTREEL_BUDGETS), for every entry point: they all create here.
        self.budgets = Budgets(store.engine, budgets or [], self._estimate_of)

    def choose(self, request: GenerateRequest) -> ModelChoice:
        """The models a request runs, checked against what each accepts (422 naming the field)."""
        return choose_models(self.providers, request)

    def _check_providers(self, request: GenerateRequest) -> tuple[ModelChoice, float]:
        """The models to run and the job's estimated total. Refuses, before anything is stored, a model the request cannot have
        (422), a provider that is not configured, a model that is retired or unavailable, or one
        without a published price (the user would pay an unknown amount)."""
        choice = self.choose(request)
        video_provider = choice.video_provider
        try:
            if request.provider != UPLOAD_PROVIDER:  # the user's picture needs no image provider
                self.providers.image(request.provider)
            self.providers.video(video_provider)
        except ProviderUnavailable as error:
            raise ProviderNotConfigured(str(error), error.name, error.missing_setting) from None
        for name in (request.provider, video_provider):
            if name == UPLOAD_PROVIDER:
                continue
            info = self.providers.info(name)
            if info.key_problem and not info.available:  # the provider itself refused the key
                message = f"Provider '{name}' is unavailable: {info.key_problem}."
                raise ProviderNotConfigured(message, name, REQUIRED_SETTING[name])
        for field, entry in (("settings.imageModel", choice.image), ("settings.videoModel", choice.video)):
            if entry is None:  # the user's picture
                continue
            problem = self.providers.model_problem(entry, configured=True)
            if problem is not None:
                raise ModelUnavailable(field, entry.id, problem, entry.replacement)
        try:
            total = self._priced(request, choice)["total"]
        except pricing.UnknownPrice as error:
            raise PriceUnknown(str(error), request.provider, video_provider) from None
        return choice, total

    def estimate(self, request: GenerateRequest) -> dict[str, float]:
        return self._priced(request, self.choose(request))

    def _priced(self, request: GenerateRequest, choice: ModelChoice) -> dict[str, float]:
        settings = request.settings
        prices = pricing.estimate(
            request.provider,
            choice.image.id if choice.image is not None else UPLOAD_PROVIDER,
            choice.video_provider,
            choice.video.id,
            settings.imageSize,
            settings.quality,
            settings.videoDuration,
        )
        return _image_only(prices) if settings.imageOnly else prices

    def _source_image(self, request: GenerateRequest, user: User) -> dict[str, object]:
        """What the job keeps of the upload it animates (its id, upright size and name, the fit);
        empty for a job that generates its picture. 422 naming the field for a mismatch or an
        upload the user does not have."""
        upload_id = request.settings.sourceImage
        if upload_id is None:
            if request.provider == UPLOAD_PROVIDER:
                raise FieldInvalid("settings.sourceImage", "provider 'upload' needs the id of an upload (POST /api/v1/uploads)")
            return {}
        if request.provider != UPLOAD_PROVIDER:
            raise FieldInvalid("provider", "leave it out (or 'upload') with settings.sourceImage: the picture is not generated")
        upload = self.uploads.find(upload_id, user) if self.uploads is not None else None
        if upload is None:
            raise _upload_gone(upload_id)
        return {
            "sourceImage": upload.id,
            "sourceWidth": upload.width,
            "sourceHeight": upload.height,
            "sourceName": upload.name,
            "fit": request.settings.fit,
        }

    def _estimate_of(self, job: Job) -> float:
        """A stored job's estimated total (budgets count it until its cost is known)."""
        try:
            if job.provider == UPLOAD_PROVIDER:  # the user's picture: no image model, no image cost
                image_model = UPLOAD_PROVIDER
            else:
                image_model = job.image_model or self.providers.model_for_image(job.provider, job.quality)
            video_model = job.video_model or self.providers.model_for_video(job.video_provider)
            prices = pricing.estimate(
                job.provider, image_model, job.video_provider, video_model, job.image_size, job.quality, job.video_duration
            )
        except (pricing.UnknownPrice, ProviderUnavailable):  # a setting changed since: what it cost so far
            return job.image_cost + job.video_cost
        return (_image_only(prices) if job.image_only else prices)["total"]

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

    async def create(
        self,
        request: GenerateRequest,
        user: User = LOCAL_USER,
        idempotency_key: str | None = None,
        *,
        source: dict[str, object] | None = None,
        batch_id: str | None = None,
        job_id: str | None = None,
    ) -> JobRecord:
        """Create and queue one job. `source`: what the job keeps of the picture it animates, when
        the service chose it (animate); `batch_id`: the batch it joins; `job_id`: the id chosen
        beforehand (animate stores the job's copy of its image under it first)."""
        source = self._source_image(request, user) if source is None else source
        choice, total = self._check_providers(request)
        if request.webhook is not None:
            if self.webhooks is None:
                raise WebhookUrlRefused("this process sends no webhooks")
            await self.webhooks.check_url(request.webhook)  # 422 for a private address (SSRF)
        if self.store.count_unfinished() >= self.max_queued_jobs:
            raise QueueFull(self.max_queued_jobs)
        self.budgets.check(user.name, total)  # 402 BUDGET_EXCEEDED, nothing stored
        self.rate_limiter.check(user.name)  # last: a refused request (400, 503) takes no slot of the user's minute
        job = self._new_job(request, user, choice, source, batch_id=batch_id, job_id=job_id)
        with self.pipeline.transition(job.id) as (connection, events):
            record = self.store.create(job, connection=connection)
            self._claim_upload(connection, source)
            self.budgets.hold(connection, user.name, total, [job.id])  # two instances racing: one passes
            if request.webhook is not None:
                events_wanted = list(dict.fromkeys(request.webhookEvents or DEFAULT_WEBHOOK_EVENTS))
                WebhookOutbox.subscribe(connection, job.id, request.webhook, events_wanted)
            if idempotency_key is not None:  # KeyTaken rolls the job back
                self.idempotency_keys.claim(connection, user.name, idempotency_key, request, job.id)
            events.append(("job_update", job_update_data(record.job)))
        await self.queue.enqueue(job.id)
        return record

    def _claim_upload(self, connection: Connection, source: dict[str, object]) -> None:
        """The upload a new job animates, held for it under its row's lock in the job's transaction
        (after the job's INSERT): a DELETE or expiry that came in between wins, and the job is not
        stored (backend/store/uploads.py). Nothing for a job that makes or takes another picture."""
        upload_id = source.get("sourceImage")
        if upload_id is not None and self.uploads is not None and not self.uploads.claim(connection, str(upload_id)):
            raise _upload_gone(str(upload_id))

    def _new_job(
        self,
        request: GenerateRequest,
        user: User,
        choice: ModelChoice,
        source: dict[str, object],
        *,
        seed: int | None = None,
        batch_id: str | None = None,
        created_at: datetime | None = None,
        job_id: str | None = None,
    ) -> Job:
        """The row of a new job, not stored yet."""
        settings = request.settings
        if seed is None:
            seed = settings.seed if settings.seed is not None else secrets.randbelow(MAX_SEED + 1)
        job = Job(
            id=job_id or new_job_id(),
            prompt=request.prompt,
            provider=request.provider,
            video_provider=choice.video_provider,
            status=JobStatus.PENDING.value,
            image_size=settings.imageSize,
            video_duration=settings.videoDuration,
            quality=settings.quality,
            seed=seed,
            extra={**source, "imageOnly": True} if settings.imageOnly else source,
            # The models chosen now (the step records the one that ran): a default changed later
            # does not change what a queued job runs.
            image_model=choice.image.id if choice.image is not None else None,
            video_model=choice.video.id,
            owner=user.name,
            worker_id=self.queue.runs_new_jobs_as(),
            batch_id=batch_id,
            created_at=created_at or utcnow(),
        )
        if job.worker_id is not None:
            job.heartbeat_at = job.created_at
        return job

    # -- batches ----------------------------------------------------------------------

    async def create_batch_once(self, batch: BatchRequest, user: User, idempotency_key: str) -> tuple[BatchRecord, bool]:
        """The batch this key made (True: replayed, nothing created), or a new one made under it
        (False); IdempotencyKeyReused when the key came with another request. As `create_once`."""
        for _ in range(2):
            job_id = self.idempotency_keys.job_for(user.name, idempotency_key, batch)
            if job_id is not None:
                batch_id = self.get(job_id, user).job.batch_id
                assert batch_id is not None, "a batch's key names one of its jobs"
                return self.batch(batch_id, user), True
            try:
                return await self.create_batch(batch, user, idempotency_key=idempotency_key), False
            except KeyTaken:  # a concurrent create with this key committed first: answer its batch
                continue
        raise RuntimeError("an idempotency key was taken and then not found")

    async def create_batch(self, batch: BatchRequest, user: User = LOCAL_USER, idempotency_key: str | None = None) -> BatchRecord:
        """Create a batch and queue its jobs, all or nothing: every job is checked and priced, and
        the batch's total estimate checked against the budgets, before the batch and all its jobs
        are written in one transaction."""
        requests = batch.requests()
        listed = isinstance(batch, BatchListRequest)
        allowed = self.rate_limiter.per_minute
        if 0 < allowed < len(requests):  # 429 would ask the client to wait for what never fits
            raise FieldInvalid(
                BATCH_JOBS_FIELD if listed else "count",
                f"{len(requests)} jobs never fit this service's rate limit of {allowed} jobs a minute"
                " (PROMPTREEL_RATE_LIMIT_PER_MINUTE): make the batch smaller",
            )
        checked: list[tuple[GenerateRequest, dict[str, object], ModelChoice]] = []
        total = 0.0
        for index, request in enumerate(requests):
            try:
                source = self._source_image(request, user)
                choice, estimate = self._check_providers(request)
            except ApiError as error:
                raise _for_item(error, index) if listed else error from None
            checked.append((request, source, choice))
            total += estimate
        urls = {request.webhook: index for index, request in reversed(list(enumerate(requests))) if request.webhook}
        for url, index in urls.items():
            if self.webhooks is None:
                raise WebhookUrlRefused("this process sends no webhooks")
            try:
                await self.webhooks.check_url(url)  # 422 for a private address (SSRF)
            except ApiError as error:
                shared = isinstance(batch, BatchListRequest) and url == batch.webhook
                raise _for_item(error, index) if listed and not shared else error from None
        if self.store.count_unfinished() + len(requests) > self.max_queued_jobs:
            raise QueueFull(self.max_queued_jobs)
        self.budgets.check(user.name, round(total, 4))  # 402 BUDGET_EXCEEDED, nothing stored
        self.rate_limiter.check_many(user.name, len(requests))  # last, as in `create`
        seeds: list[int | None] = list(variant_seeds(batch)) if isinstance(batch, VariantsRequest) else [None] * len(requests)
        record = Batch(id=new_batch_id(), owner=user.name)
        jobs = [
            # Created one microsecond apart: the batch lists its jobs in the order they were asked for.
            self._new_job(
                request,
                user,
                choice,
                source,
                seed=seed,
                batch_id=record.id,
                created_at=record.created_at + timedelta(microseconds=i),
            )
            for i, ((request, source, choice), seed) in enumerate(zip(checked, seeds, strict=True))
        ]
        stored = []
        with self.store.transaction() as connection:
            self.batches.create(record, connection)
            for index, (job, (request, source, _)) in enumerate(zip(jobs, checked, strict=True)):
                created = self.store.create(job, connection=connection)
                try:
                    self._claim_upload(connection, source)
                except ApiError as error:
                    raise _for_item(error, index) if listed else error from None
                if request.webhook is not None:
                    events_wanted = list(dict.fromkeys(request.webhookEvents or DEFAULT_WEBHOOK_EVENTS))
                    WebhookOutbox.subscribe(connection, job.id, request.webhook, events_wanted)
                stored += self.bus.record(job.id, [("job_update", job_update_data(created.job))], connection)
            self.budgets.hold(connection, user.name, round(total, 4), [job.id for job in jobs])  # as in `create`
            if idempotency_key is not None:  # KeyTaken rolls the batch back
                self.idempotency_keys.claim(connection, user.name, idempotency_key, batch, jobs[0].id)
        self.bus.announce(stored)
        for job in jobs:
            await self.queue.enqueue(job.id)
        return self.batch(record.id, user)

    def batch(self, batch_id: str, user: User = LOCAL_USER) -> BatchRecord:
        """The batch and its jobs in the order they were made, if `user` may see it: another user's
        batch answers as if it did not exist (BatchNotFound)."""
        batch = self.batches.get(batch_id)
        if batch is None or not user.may_see(batch.owner):
            raise BatchNotFound(batch_id)
        records, _ = self.store.list(batch_id=batch_id, limit=BATCH_READ_LIMIT)
        return BatchRecord(batch, records[::-1])

    async def cancel_batch(self, batch_id: str, user: User = LOCAL_USER) -> BatchRecord:
        """Cancel every unfinished job of the batch (as `cancel`); finished ones stay as they are."""
        unfinished = [record.job.id for record in self.batch(batch_id, user).jobs if not record.job.job_status.finished]

        async def cancel_one(job_id: str) -> None:
            with contextlib.suppress(JobNotCancellable, JobNotFound):  # it finished, or was removed, meanwhile
                await self.cancel(job_id, user)

        # All at once, newest first: no queued job of the batch starts in a slot a cancelled one freed.
        await asyncio.gather(*(cancel_one(job_id) for job_id in reversed(unfinished)))
        return self.batch(batch_id, user)

    async def animate(self, job_id: str, body: AnimateRequest, user: User = LOCAL_USER) -> JobRecord:
        """A new job that animates the image of a completed image-only job (finished is final: that
        job stays as it is). Its image step takes the image at once, at no cost; it joins the same batch."""
        job = self.get(job_id, user).job
        reason = None
        if not job.image_only:
            reason = "it was not made with settings.imageOnly"
        elif job.job_status is not JobStatus.COMPLETED:
            reason = f"it is {job.status}, not completed"
        elif not job.image_path or job.media_expired_at is not None:
            reason = "its image is gone (media retention)"
        if reason is not None:
            raise JobNotAnimatable(job.id, job.status, reason)
        wanted = body.settings
        video_provider = wanted.videoProvider or job.video_provider
        same_provider = video_provider == job.video_provider
        request = GenerateRequest.model_validate(
            {
                "prompt": body.prompt or job.prompt,
                "provider": UPLOAD_PROVIDER,
                "settings": {
                    "imageSize": job.image_size,
                    "videoDuration": wanted.videoDuration or job.video_duration,
                    "quality": job.quality,
                    "seed": job.seed,
                    "videoProvider": video_provider,
                    "videoModel": wanted.videoModel or (job.video_model if same_provider else None),
                },
                "webhook": body.webhook,
                "webhookEvents": body.webhookEvents,
            }
        )
        width, height = (int(part) for part in job.image_size.split("x"))
        # The image is copied into the new job's own media now, before the job exists: a DELETE of the
        # image-only job or media retention can then no longer take it from the queued job (docs/architecture.md).
        new_id = new_job_id()
        if not await asyncio.to_thread(self._copy_image, job.image_path, new_id):
            raise JobNotAnimatable(job.id, job.status, "its image is gone (removed, or media retention)")
        source: dict[str, object] = {
            "sourceJob": job.id,
            "sourceWidth": width,
            "sourceHeight": height,
            "fit": "crop",
        }
        try:
            return await self.create(request, user, source=source, batch_id=job.batch_id, job_id=new_id)
        except BaseException:
            if self.store.get(new_id) is None:  # refused (budget, queue, ...): the copy is nobody's
                await asyncio.shield(asyncio.to_thread(self.media.remove_job, new_id))
            raise

    def _copy_image(self, relative: str | None, job_id: str) -> bool:
        """Copy a stored job image to be `job_id`'s own (blocking: maybe S3); False when it is gone."""
        png = self.media.read_bytes(relative)
        if png is None:
            return False
        self.media.write_image(job_id, png)
        return True

    # -- reading ----------------------------------------------------------------------

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

    def webhook_deliveries(self, job_id: str, user: User) -> dict[str, object]:
        """The job's webhook and its deliveries (attempts, status codes, next try); JobNotFound as `get`."""
        self.get(job_id, user)
        if self.webhooks is None:
            return {"webhook": None, "events": [], "deliveries": []}
        return self.webhooks.deliveries(job_id)

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
        batch: str | None = None,
    ) -> tuple[list[JobRecord], int]:
        """One page of `user`'s jobs, newest first, in `statuses` (none: all), with `search` in
        the prompt and of `batch` (None: any), and how many match in all."""
        return self.store.list(statuses=statuses, search=search, limit=limit, offset=offset, owner=user.name, batch_id=batch)

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
            providers={name: availability[name] for name in ("dalle3", "flux1", "runway")}
            | {"comfyui": self.providers.info("comfyui").available},
            missing={"comfyui": self.providers.missing("comfyui")},
            active_jobs=running,
            queue_length=waiting,
            system_load=round(load, 2),
            workers_alive=workers,
        )

"""System: builds every service once and hands them to routes, pages and the CLI.

No module-level singletons: a test builds its own System with its own settings.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from backend.auth import Authenticator
from backend.events.bus import EventBus
from backend.events.log import EventLog
from backend.jobs.budgets import parse_budgets
from backend.jobs.pipeline import Pipeline
from backend.jobs.public import absolute_media_urls, job_data
from backend.jobs.queue import JobQueue
from backend.jobs.runner import JobRunner
from backend.jobs.service import JobService
from backend.media.local import LocalMediaStore
from backend.media.store import MediaStorageError, MediaStore
from backend.observability.job_observer import JobObserver
from backend.providers.registry import ProviderRegistry
from backend.rate_limit import RateLimiter
from backend.settings import Settings
from backend.store.database import create_db_engine, migrate
from backend.store.jobs import JobStore
from backend.store.models import utcnow
from backend.store.uploads import UploadStore
from backend.uploads.service import UploadService
from backend.webhooks.outbox import WebhookOutbox
from backend.webhooks.signing import load_webhook_secret

if TYPE_CHECKING:
    from backend.events.relay import EventRelay
    from backend.jobs.procrastinate_queue import ProcrastinateQueue

log = logging.getLogger(__name__)
#: How long a serving instance waits at its start for its LISTEN connection (s).
RELAY_START_TIMEOUT = 15.0
#: Seconds between two rounds of housekeeping (pruning old stored events).
HOUSEKEEPING_INTERVAL = 600.0


class System:
    """`run_here`: run jobs in this process whatever the task engine (`promptreel generate`)."""

    def __init__(self, settings: Settings | None = None, *, run_here: bool = False):
        self.settings = settings or Settings()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = create_db_engine(self.settings.resolved_database_url)
        self.store = JobStore(self.engine)
        self.event_log = EventLog(self.engine)
        self.bus = EventBus(self.event_log)
        #: With PostgreSQL, a serving instance hears every instance's events (see start()).
        self.relay: EventRelay | None = None
        self.media = media_store_for(self.settings)
        self.providers = ProviderRegistry(self.settings)
        self.pipeline = Pipeline(self.store, self.bus, self.media, self.providers)
        self.runner = JobRunner(self.pipeline, self.settings)
        self.queue: JobQueue = self.runner
        self.cluster: ProcrastinateQueue | None = None
        if self.settings.task_engine == "procrastinate" and not run_here:
            from backend.jobs.procrastinate_queue import ProcrastinateQueue  # procrastinate: only installed for a cluster

            self.cluster = self.queue = ProcrastinateQueue(self.settings, self.engine, self.store, self.runner, self.bus)
        self.uploads = UploadService(
            UploadStore(self.engine),
            self.media,
            max_bytes=self.settings.max_upload_bytes,
            max_pixels=self.settings.max_upload_pixels,
            expiry=timedelta(hours=self.settings.upload_expiry_hours),
        )
        self.webhooks = WebhookOutbox(
            self.engine,
            load_webhook_secret(self.settings),
            self._webhook_job,
            allow_private=self.settings.webhook_allow_private,
            retry_base_seconds=self.settings.webhook_retry_base_seconds,
            retry_hours=self.settings.webhook_retry_hours,
        )
        self.jobs = JobService(
            self.store,
            self.queue,
            self.pipeline,
            self.providers,
            self.bus,
            self.media,
            max_queued_jobs=self.settings.max_queued_jobs,
            rate_limiter=RateLimiter(self.settings.rate_limit_per_minute),
            uploads=self.uploads,
            webhooks=self.webhooks,
            budgets=parse_budgets(self.settings.budgets),
        )
        self.auth = Authenticator(self.settings)
        # job transition log lines and the metrics registry
        self.observer = JobObserver(
            self.bus, self.store, self.queue, self.runner.is_running, log_prompts=self.settings.log_prompts
        )
        self._housekeeping: asyncio.Task[None] | None = None

    def migrate(self) -> None:
        migrate(self.engine)
        if self.cluster is not None:
            from backend.jobs.procrastinate_queue import ensure_schema

            ensure_schema(self.engine)

    async def start(self) -> None:
        """Migrate the schema, listen to every instance's events, then pick up the jobs the last
        process left unfinished (procrastinate's workers do that in a cluster)."""
        self.migrate()
        if self.event_log.notifies:
            from backend.events.relay import EventRelay  # psycopg: only installed for PostgreSQL

            self.relay = EventRelay(self.settings.resolved_database_url, self.bus, self.event_log)
            self.relay.start()
            await asyncio.wait_for(self.relay.listening.wait(), RELAY_START_TIMEOUT)
        self._housekeeping = asyncio.create_task(self._keep_house(), name="housekeeping")
        self.bus.listen(self.webhooks.wake)  # every stored event may be one a webhook waits for
        self.webhooks.start()
        if self.cluster is not None:
            await self.cluster.open()
            return
        self.runner.adopts_orphans = True  # jobs of a process that died are taken over once it misses its beats
        self.runner.start_heartbeat()
        resumed = self.runner.resume_unfinished()
        if resumed:
            log.info("resumed %d unfinished job(s)", len(resumed))

    async def _keep_house(self) -> None:
        from backend.media.retention import announce_expired, expire_media, round_interval

        retention_days = self.settings.media_retention_days  # 0: media are kept forever
        interval = round_interval(retention_days, HOUSEKEEPING_INTERVAL) if retention_days > 0 else HOUSEKEEPING_INTERVAL
        # Uploads expire too: a tenth of their expiry between rounds as well (at least MIN_ROUND_INTERVAL).
        interval = min(interval, round_interval(self.settings.upload_expiry_hours / 24, HOUSEKEEPING_INTERVAL))
        while True:
            try:
                pruned = self.event_log.prune(utcnow() - timedelta(hours=self.settings.event_retention_hours))
                if pruned:
                    log.info("pruned %d stored event(s)", pruned)
            except Exception:  # the store may be down for a moment: try again next time
                log.exception("housekeeping failed")
            if retention_days > 0:
                try:
                    # In a thread: it deletes files (maybe S3 objects). Announced here, on the loop, once stored.
                    cutoff = utcnow() - timedelta(days=retention_days)
                    expired = await asyncio.to_thread(expire_media, self.store, self.media, cutoff)
                    announce_expired(self.store, self.bus, expired)
                except Exception:  # as above: the next round tries again
                    log.exception("media retention failed")
            try:  # in a thread: it deletes files (maybe S3 objects)
                await asyncio.to_thread(self.uploads.expire)
            except Exception:  # as above: the next round tries again
                log.exception("upload expiry failed")
            await asyncio.sleep(interval)  # a clock, not a wait for an event

    def _webhook_job(self, job_id: str) -> dict[str, Any] | None:
        """A job as GET answers it, for a webhook: media URLs under PROMPTREEL_PUBLIC_URL (or the served address)."""
        record = self.store.get(job_id)
        if record is None:
            return None
        base = self.settings.public_url or f"http://{self.settings.host}:{self.settings.port}"
        return absolute_media_urls(job_data(record), base, self.auth.sign)

    async def stop(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        await self.webhooks.stop()
        if self.relay is not None:
            await self.relay.stop()
        await self.runner.shutdown()
        if self.cluster is not None:
            await self.cluster.close()
        self.bus.close()
        self.engine.dispose()


def media_store_for(settings: Settings) -> MediaStore:
    """The store the settings ask for: S3 when a bucket is named, else the local media folder."""
    if not settings.s3_bucket:
        return LocalMediaStore(settings.media_dir)
    try:
        from backend.media.s3 import S3MediaStore  # boto3 is only installed with the `cluster` extra
    except ImportError as error:
        raise MediaStorageError(
            f"PROMPTREEL_S3_BUCKET is set but boto3 is missing ({error}): install promptreel[cluster]"
        ) from error
    return S3MediaStore.from_settings(settings)

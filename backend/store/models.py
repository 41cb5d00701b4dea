"""The stored shape of a job and its steps (SQLModel tables) and their vocabularies."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, Text, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator):
    """Stores UTC and always gives back aware datetimes (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def _optional_time() -> Any:
    return Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))


class JobStatus(StrEnum):
    PENDING = "pending"
    GENERATING_IMAGE = "generating_image"
    GENERATING_VIDEO = "generating_video"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATUSES


ACTIVE_STATUSES = (JobStatus.GENERATING_IMAGE, JobStatus.GENERATING_VIDEO)
UNFINISHED_STATUSES = (JobStatus.PENDING, *ACTIVE_STATUSES)
#: Final: a job that reached one of these never changes status again. A tuple, not a set: a
#: status string is found in it too (an Enum member does not hash as its value).
FINISHED_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepKind(StrEnum):
    IMAGE = "image_generation"
    VIDEO = "video_generation"

    @property
    def label(self) -> str:  # not `title`: that is str's own method
        return "Image Generation" if self is StepKind.IMAGE else "Video Generation"


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    #: The list's pages, newest first within an owner, a status or both, read in index order (0005).
    __table_args__ = (
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),
        Index("ix_jobs_status_created", "status", "created_at", "id"),
        Index("ix_jobs_owner_status_created", "owner", "status", "created_at", "id"),
    )

    id: str = Field(primary_key=True, max_length=64)
    prompt: str = Field(sa_type=Text)
    provider: str = Field(max_length=32)  # the image provider, as the guide names it
    video_provider: str = Field(max_length=32)
    status: str = Field(default=JobStatus.PENDING, max_length=32)
    progress: int = 0
    image_size: str = Field(max_length=16)
    video_duration: int
    quality: str = Field(max_length=16)
    seed: int = Field(sa_type=BigInteger)
    image_model: str | None = None
    video_model: str | None = None
    #: Provider extras worth keeping, such as DALL-E's revised prompt.
    extra: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    image_path: str | None = None  # relative to the media directory
    video_path: str | None = None
    image_cost: float = 0.0
    video_cost: float = 0.0
    error: str | None = Field(default=None, sa_type=Text)
    #: The process that runs the job (promptreel serve, worker or generate), and when it last said so:
    #: a job whose owner stopped beating is free for another process to resume.
    worker_id: str | None = Field(default=None, max_length=64)
    heartbeat_at: datetime | None = _optional_time()
    #: The sequence number of the job's last stored event (see JobEvent).
    event_seq: int = 0
    #: The user who made the job (None: authentication was off); others never see it.
    owner: str | None = Field(default=None, max_length=64)
    #: When retention removed the job's media (the job stays in the history).
    media_expired_at: datetime | None = _optional_time()
    #: The batch the job was made in (POST /api/v1/batches, or an animate of one of its jobs); None: a lone job.
    batch_id: str | None = Field(default=None, max_length=64, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UtcDateTime(), index=True, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False))

    @property
    def job_status(self) -> JobStatus:
        return JobStatus(self.status)

    @property
    def total_cost(self) -> float:
        return round(self.image_cost + self.video_cost, 4)

    @property
    def image_only(self) -> bool:
        """`settings.imageOnly`: the job stops after its image (no video step)."""
        return bool(self.extra.get("imageOnly"))

    @property
    def step_kinds(self) -> tuple[StepKind, ...]:
        """The steps the job runs, in order."""
        return (StepKind.IMAGE,) if self.image_only else tuple(StepKind)


class JobStep(SQLModel, table=True):
    __tablename__ = "job_steps"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", index=True, max_length=64, ondelete="CASCADE")
    kind: str = Field(max_length=32)
    status: str = Field(default=StepStatus.PENDING, max_length=16)
    progress: int = 0
    started_at: datetime | None = _optional_time()
    ended_at: datetime | None = _optional_time()
    #: The provider's own id for the work (prediction, task), saved before polling it.
    remote_id: str | None = Field(default=None, max_length=128)
    log: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))

    @property
    def step_kind(self) -> StepKind:
        return StepKind(self.kind)


class JobEvent(SQLModel, table=True):
    """One event of a job as the bus published it, numbered per job: a client that missed some
    (a dropped connection, a lost NOTIFY) reads them back in order."""

    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_job_events_job_seq"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer(), "sqlite"))
    job_id: str = Field(foreign_key="jobs.id", max_length=64, ondelete="CASCADE")
    seq: int
    type: str = Field(max_length=32)
    data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UtcDateTime(), index=True, nullable=False))


class JobWebhook(SQLModel, table=True):
    """Where a job's events are POSTed (docs/api.md#webhooks), and how far its stored events have
    been turned into deliveries (`cursor`: the last event seq looked at)."""

    __tablename__ = "job_webhooks"

    job_id: str = Field(primary_key=True, foreign_key="jobs.id", max_length=64, ondelete="CASCADE")
    url: str = Field(sa_column=Column(Text, nullable=False))
    events: list[str] = Field(sa_column=Column(JSON, nullable=False))
    cursor: int = 0
    started_sent: bool = False
    last_progress_at: datetime | None = _optional_time()


class WebhookDelivery(SQLModel, table=True):
    """One event to POST to a job's webhook: the outbox row, retried until a 2xx or given up.
    `id` is the Standard Webhooks `webhook-id`, the same on every attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),)

    id: str = Field(primary_key=True, max_length=128)
    job_id: str = Field(foreign_key="jobs.id", max_length=64, ondelete="CASCADE", index=True)
    seq: int
    type: str = Field(max_length=32)
    #: The exact body sent on every attempt (JSON text).
    payload: str = Field(sa_column=Column(Text, nullable=False))
    #: pending, delivered or failed (given up).
    state: str = Field(default="pending", max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False))
    attempts: int = 0
    next_attempt_at: datetime | None = _optional_time()
    #: Every attempt: {"attempt", "at", "statusCode", "error"}.
    history: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    #: The process sending it now, until when (a process that dies leaves it to another after that).
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = _optional_time()


class IdempotencyKey(SQLModel, table=True):
    """An `Idempotency-Key` a user sent with a create, and the job it made (backend/jobs/idempotency.py).
    The primary key is what makes two concurrent creates with one key make one job, on every instance."""

    __tablename__ = "idempotency_keys"

    #: The user's name; "" when authentication is off (a NULL would never collide).
    owner: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=255)
    #: SHA-256 of the validated request: the same key with another body is refused.
    request_hash: str = Field(max_length=64)
    #: Removing the job frees its key.
    job_id: str = Field(foreign_key="jobs.id", max_length=64, ondelete="CASCADE", index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False))


class Batch(SQLModel, table=True):
    """Jobs asked for together (POST /api/v1/batches): variants of one request, or a list of requests.
    Its jobs name it in `jobs.batch_id`; it is owned as they are."""

    __tablename__ = "batches"

    id: str = Field(primary_key=True, max_length=64)
    #: The user who made it (None: authentication was off); others never see it.
    owner: str | None = Field(default=None, max_length=64, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False))

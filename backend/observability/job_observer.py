"""The job transitions an operator sees: a log line per job status change and per step end,
and the step durations and provider errors counted in the metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, bindparam, select

from backend.events.bus import Event, EventBus
from backend.observability.logs import log_event
from backend.observability.metrics import Metrics
from backend.store.models import FINISHED_STATUSES, Job, JobStatus, JobStep, StepKind, StepStatus

if TYPE_CHECKING:
    from backend.jobs.queue import JobQueue
    from backend.store.jobs import JobRecord, JobStore

log = logging.getLogger(__name__)
ENDED_STEP_STATUSES = frozenset({StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.CANCELLED})
_JOBS = Job.__table__  # type: ignore[attr-defined]  # SQLModel sets __table__ without declaring it
#: What the job's lines name that its events do not carry: read once per job, not the whole record per line.
_STEPS = JobStep.__table__  # type: ignore[attr-defined]
_STEP_TIMES = select(_STEPS.c.started_at, _STEPS.c.ended_at).where(
    _STEPS.c.job_id == bindparam("job_id"), _STEPS.c.kind == bindparam("kind")
)
_FACTS_OF = select(_JOBS.c.prompt, _JOBS.c.provider, _JOBS.c.video_provider).where(_JOBS.c.id == bindparam("job_id"))


def _provider_of(job: Job, kind: StepKind) -> str:
    return job.provider if kind is StepKind.IMAGE else job.video_provider


class JobObserver:
    """Listens to the bus: a log line per job status change and per step end, and the job metrics.

    `runs_here(job_id)`: whether this process runs the job. In a cluster every instance hears every
    event: only the process running the job counts it in its metrics."""

    def __init__(
        self, bus: EventBus, store: JobStore, queue: JobQueue, runs_here: Callable[[str], bool], *, log_prompts: bool = False
    ):
        self.store, self.engine, self.runs_here = store, store.engine, runs_here
        self.metrics = Metrics(store, queue)
        self.log_prompts = log_prompts
        #: Per unfinished job: the last status logged, and its prompt and providers (read once from the store).
        self._status: dict[str, str] = {}
        self._facts: dict[str, Row[Any] | None] = {}
        self.stop = bus.listen(self._on_event)

    def _on_event(self, event: Event) -> None:
        kind, job_id, data = event["type"], event["jobId"], event["data"]
        seq = event.get("seq")
        if kind == "step_update":
            if data.get("status") in ENDED_STEP_STATUSES:
                self._step_ended(job_id, StepKind(data["id"]), data["status"], data)
        elif kind == "job_update":
            status = data.get("status")
            # A completed or failed job_update is always followed by its job_completed/job_failed,
            # which says more (the error): that one is the line.
            if status != self._status.get(job_id) and status not in (JobStatus.COMPLETED, JobStatus.FAILED):
                self._transition(job_id, status, data.get("progress"), None, seq)
        elif kind == "job_completed":
            self._transition(job_id, JobStatus.COMPLETED.value, 100, None, seq)
        elif kind == "job_failed":
            record = self._read(job_id)
            if record is not None and self.runs_here(job_id):
                self._count_failure(record)
            self._transition(job_id, JobStatus.FAILED.value, record.job.progress if record else None, data.get("error"), seq)
        elif kind == "job_removed":
            self._forget(job_id)
            log_event(log, "job_transition", job_id=job_id, status="removed", previous=None, seq=seq)

    def _prompt_fields(self, job_id: str) -> dict[str, Any]:
        facts = self._job_facts(job_id)
        if facts is None:
            return {}
        prompt = facts.prompt
        return {"prompt": prompt} if self.log_prompts else {"prompt_length": len(prompt)}

    def _transition(self, job_id: str, status: str | None, progress: int | None, error: str | None, seq: int | None) -> None:
        fields: dict[str, Any] = {
            "job_id": job_id,
            "status": status,
            "previous": self._status.get(job_id),
            "progress": progress,
            "seq": seq,
        }
        if error is not None:
            fields["error"] = error
        fields.update(self._prompt_fields(job_id))
        log_event(log, "job_transition", **fields)
        if status in FINISHED_STATUSES:
            self._forget(job_id)
        elif status is not None:
            self._status[job_id] = status

    def _forget(self, job_id: str) -> None:
        self._status.pop(job_id, None)
        self._facts.pop(job_id, None)

    def _step_ended(self, job_id: str, kind: StepKind, status: str, data: dict[str, Any]) -> None:
        if not self.runs_here(job_id):
            return
        if not data.get("startTime") or not data.get("endTime"):
            return  # never started (cancelled while the job waited): nothing to time
        facts = self._job_facts(job_id)
        times = self._step_times(job_id, kind)  # the events' times are whole seconds: the store's are exact
        if facts is None or times is None or None in times:
            return
        seconds = max(0.0, (times.ended_at - times.started_at).total_seconds())
        provider = facts.provider if kind is StepKind.IMAGE else facts.video_provider
        self.metrics.step_seconds.labels(kind.value, provider, status).observe(seconds)
        log_event(
            log, "step_ended", job_id=job_id, step=kind.value, provider=provider, status=status, duration_ms=round(seconds * 1000)
        )

    def _count_failure(self, record: JobRecord) -> None:
        failed = next((step.step_kind for step in record.steps if step.status == StepStatus.FAILED), StepKind.IMAGE)
        self.metrics.provider_errors.labels(_provider_of(record.job, failed), failed.value).inc()

    def _step_times(self, job_id: str, kind: StepKind) -> Row[Any] | None:
        try:
            with self.engine.connect() as connection:
                return connection.execute(_STEP_TIMES, {"job_id": job_id, "kind": kind.value}).one_or_none()
        except Exception as error:  # as in _read
            log_event(log, "observer_store_error", logging.WARNING, job_id=job_id, error=type(error).__name__)
            return None

    def _job_facts(self, job_id: str) -> Row[Any] | None:
        """The job's prompt and providers: one small query the first time, kept until it ends."""
        if job_id not in self._facts:
            try:
                with self.engine.connect() as connection:
                    self._facts[job_id] = connection.execute(_FACTS_OF, {"job_id": job_id}).one_or_none()
            except Exception as error:  # as in _read
                log_event(log, "observer_store_error", logging.WARNING, job_id=job_id, error=type(error).__name__)
                return None
        return self._facts[job_id]

    def _read(self, job_id: str) -> JobRecord | None:
        try:
            return self.store.get(job_id)
        except Exception as error:  # the store is down: the line goes out without what it would add
            log_event(log, "observer_store_error", logging.WARNING, job_id=job_id, error=type(error).__name__)
            return None

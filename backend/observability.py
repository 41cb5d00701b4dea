"""What an operator sees: JSON log lines, one per request and per job transition, and Prometheus metrics.

Log lines are one JSON object each: `time`, `level`, `event` and the event's fields. Nothing
secret goes in: no headers, no query strings (signed media URLs and the /ws token travel
there), no request bodies, and a prompt only as its length unless PROMPTREEL_LOG_PROMPTS.

Metrics live in a registry of the System's own (tests build several Systems in one process).
Counts of jobs and the queue are read at scrape time, so every instance of a cluster reports
the same numbers; step durations and provider errors are counted only by the process that
ran the step, so summing them over a cluster counts each step once.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Row, bindparam, select

from .events import Event, EventBus
from .models import Job, JobStatus, JobStep, StepKind, StepStatus

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .jobs import JobQueue
    from .store import JobRecord, JobStore

log = logging.getLogger(__name__)
#: Loggers that would write a line per provider poll, job start or migration step.
QUIET_LOGGERS = ("httpx", "httpcore", "procrastinate", "alembic")
#: Local steps take seconds, remote ones minutes.
STEP_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800)
#: Methods counted by name; anything else is "other" (a client must not be able to add series).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: A request path longer than this is cut in the log.
MAX_LOGGED_PATH = 1000
ENDED_STEP_STATUSES = frozenset({StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.CANCELLED})
FINISHED_STATUSES = frozenset(status.value for status in JobStatus if status.finished)
_CORE_KEYS = ("time", "level", "event")
#: A URL's query string in a library's message (NiceGUI logs "<url> not found" for a path it has no page for).
_URL_QUERY = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#]*)\?[^\s#]*")
_JOBS = Job.__table__  # type: ignore[attr-defined]
#: What the job's lines name that its events do not carry: read once per job, not the whole record per line.
_STEPS = JobStep.__table__  # type: ignore[attr-defined]
_STEP_TIMES = select(_STEPS.c.started_at, _STEPS.c.ended_at).where(_STEPS.c.job_id == bindparam("job_id"), _STEPS.c.kind == bindparam("kind"))
_FACTS_OF = select(_JOBS.c.prompt, _JOBS.c.provider, _JOBS.c.video_provider).where(_JOBS.c.id == bindparam("job_id"))


# -- log lines ----------------------------------------------------------------------------------


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """One structured line: `event` plus `fields`."""
    logger.log(level, event, extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a plain library message becomes `{"event": "log", "message": ...}`."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, timezone.utc)
        line: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line["event"] = record.getMessage()
            line.update((key, value) for key, value in fields.items() if key not in _CORE_KEYS)
        else:
            # Without query strings: a token or a signature sent to a mistyped path must not stay in the log.
            line.update(event="log", logger=record.name, message=_URL_QUERY.sub(r"\1?…", record.getMessage()))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)  # json escapes newlines: one line each


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the whole process; safe to call twice."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "promptreel_json", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.promptreel_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # RequestLogMiddleware writes the one line per request; uvicorn's access line would be a second.
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False


# -- metrics ------------------------------------------------------------------------------------


class _StateCollector(Collector):
    """Jobs by status and the queue, read when Prometheus scrapes (never stale, nothing to keep in step)."""

    def __init__(self, store: JobStore, queue: JobQueue):
        self.store, self.queue = store, queue

    def describe(self) -> Iterator[Metric]:
        # Registering must not read the store: the schema may not be migrated yet.
        yield from self._families()

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("promptreel_jobs", "Jobs in the store, by status.", labels=["status"]),
            GaugeMetricFamily("promptreel_queue_length", "Jobs waiting to run."),
            GaugeMetricFamily("promptreel_active_jobs", "Jobs (steps) generating right now."),
            GaugeMetricFamily("promptreel_workers_alive", "Processes that run jobs."),
            GaugeMetricFamily("promptreel_store_up", "1 when the job store answered this scrape."),
        )

    def collect(self) -> Iterator[Metric]:
        jobs, queue, active, workers, store_up = self._families()
        try:
            by_status = self.store.count_by_status()
            running, waiting, alive = self.queue.counts()
        except Exception as error:  # the store is down: say so, and still serve the other metrics
            log_event(log, "metrics_store_error", logging.WARNING, error=type(error).__name__)
            store_up.add_metric([], 0)
            yield store_up
            return
        for status in JobStatus:
            jobs.add_metric([status.value], by_status.get(status.value, 0))
        queue.add_metric([], waiting)
        active.add_metric([], running)
        workers.add_metric([], alive)
        store_up.add_metric([], 1)
        yield from (jobs, queue, active, workers, store_up)


class Metrics:
    def __init__(self, store: JobStore, queue: JobQueue):
        self.registry = CollectorRegistry()
        self.step_seconds = Histogram(
            "promptreel_step_duration_seconds", "How long steps ran, by step, provider and how they ended.",
            ["step", "provider", "status"], buckets=STEP_BUCKETS, registry=self.registry,
        )
        self.provider_errors = Counter(
            "promptreel_provider_errors", "Jobs that failed, by the provider of the step that failed.",
            ["provider", "step"], registry=self.registry,
        )
        self.http_requests = Counter(
            "promptreel_http_requests", "HTTP requests answered, by method and status class.",
            ["method", "status"], registry=self.registry,
        )
        self.registry.register(_StateCollector(store, queue))
        ProcessCollector(registry=self.registry)  # memory, CPU and open files of this process

    def count_request(self, method: str, status: int | None) -> None:
        status_class = f"{status // 100}xx" if status else "none"
        self.http_requests.labels(method if method in KNOWN_METHODS else "other", status_class).inc()

    def exposition(self) -> bytes:
        """The text format (0.0.4); reads the store: call it in a thread."""
        return generate_latest(self.registry)


# -- job transitions ----------------------------------------------------------------------------


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
        fields: dict[str, Any] = {"job_id": job_id, "status": status, "previous": self._status.get(job_id), "progress": progress, "seq": seq}
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
        log_event(log, "step_ended", job_id=job_id, step=kind.value, provider=provider, status=status, duration_ms=round(seconds * 1000))

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


# -- requests -----------------------------------------------------------------------------------


class RequestLogMiddleware:
    """Pure ASGI: one line per HTTP request and per WebSocket session, once it has ended.

    It only watches the messages going out, so streamed bodies and WebSockets pass untouched.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, Any] = {"status": None, "bytes": 0, "close_code": None}

        async def watching(message: Message) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                seen["status"] = message["status"]
            elif kind == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            elif kind == "websocket.accept":
                seen["status"] = 101
            elif kind == "websocket.close":
                seen["close_code"] = message.get("code", 1000)
                if seen["status"] is None:
                    seen["status"] = 403  # closed before accepting: the server answers 403
            await send(message)

        try:
            await self.app(scope, receive, watching)
        except BaseException:
            if seen["status"] is None:
                seen["status"] = 500  # ServerErrorMiddleware, outside this one, answers it
            raise
        finally:
            self._log(scope, seen, time.perf_counter() - started)

    def _log(self, scope: Scope, seen: dict[str, Any], seconds: float) -> None:
        status = seen["status"]
        fields: dict[str, Any] = {
            "method": scope.get("method", "GET"),
            "path": scope.get("path", "")[:MAX_LOGGED_PATH],  # the path only: query strings carry signatures and tokens
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
        }
        if scope["type"] == "http":
            fields["bytes"] = seen["bytes"]
        elif seen["close_code"] is not None:
            fields["close_code"] = seen["close_code"]
        client = scope.get("client")
        fields["client"] = client[0] if client else None
        state = scope.get("state")
        user = state.get("user") if isinstance(state, dict) else None  # set by authentication, when it ran
        if getattr(user, "name", None) is not None:
            fields["user"] = user.name  # type: ignore[union-attr]
        event = "http_request" if scope["type"] == "http" else "websocket"
        level = logging.ERROR if status is not None and status >= 500 else logging.INFO
        log_event(log, event, level, **fields)
        if self.metrics is not None and scope["type"] == "http":
            self.metrics.count_request(fields["method"], status)

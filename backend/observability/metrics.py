"""Prometheus metrics, in a registry of the System's own (tests build several Systems in one process).

Counts of jobs and the queue are read at scrape time, so every instance of a cluster reports
the same numbers; step durations and provider errors are counted only by the process that
ran the step, so summing them over a cluster counts each step once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backend.observability.logs import log_event
from backend.store.models import JobStatus

if TYPE_CHECKING:
    from backend.jobs.queue import JobQueue
    from backend.store.jobs import JobStore

log = logging.getLogger(__name__)
#: Local steps take seconds, remote ones minutes.
STEP_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800)
#: Methods counted by name; anything else is "other" (a client must not be able to add series).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


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
            "promptreel_step_duration_seconds",
            "How long steps ran, by step, provider and how they ended.",
            ["step", "provider", "status"],
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self.provider_errors = Counter(
            "promptreel_provider_errors",
            "Jobs that failed, by the provider of the step that failed.",
            ["provider", "step"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "promptreel_http_requests",
            "HTTP requests answered, by method and status class.",
            ["method", "status"],
            registry=self.registry,
        )
        self.registry.register(_StateCollector(store, queue))
        ProcessCollector(registry=self.registry)  # memory, CPU and open files of this process

    def count_request(self, method: str, status: int | None) -> None:
        status_class = f"{status // 100}xx" if status else "none"
        self.http_requests.labels(method if method in KNOWN_METHODS else "other", status_class).inc()

    def exposition(self) -> bytes:
        """The text format (0.0.4); reads the store: call it in a thread."""
        return generate_latest(self.registry)

"""The in-process event bus: the pipeline publishes, the WebSocket and the studio listen.

Events are the guide's `{"type", "jobId", "data"}` dicts plus `seq`, the event's number
within its job when an EventLog stores them. Each subscriber has its own queue, so one slow
listener never holds up the pipeline or the others; per job, events reach every subscriber in
the order they were published.

With a PostgreSQL store, events cross processes: the EventLog NOTIFYs each one and this
process's EventRelay hears them all, its own included, and hands them to `deliver`. The bus
then stops delivering its own events directly (`relayed`), so every instance sees every
event once, in the same order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection

from backend.events.log import Event, EventLog

log = logging.getLogger(__name__)

#: A WebSocket client that falls this far behind is dropped rather than buffered forever.
MAX_QUEUED_EVENTS = 10_000


class SubscriberTooSlow(Exception):
    pass


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Subscription:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(MAX_QUEUED_EVENTS)
        self.overflowed = False

    def _put(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True

    def _close(self) -> None:
        if self.queue.full():  # the end marker must get through: the client is dropped anyway
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    def drain(self, limit: int) -> list[Event]:
        """Up to `limit` events already waiting, taken at once (a client that fell behind catches
        up in one batch); the end marker stays queued, for the iterator to stop on."""
        events: list[Event] = []
        while len(events) < limit and not self.queue.empty():
            event = self.queue.get_nowait()
            if event is None:
                self.queue.put_nowait(None)
                break
            events.append(event)
        return events

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self.queue.get()
            if event is None:
                return
            if self.overflowed:
                raise SubscriberTooSlow()
            yield event


class EventBus:
    def __init__(self, event_log: EventLog | None = None) -> None:
        self.event_log = event_log
        #: Set while an EventRelay delivers this process's events (from NOTIFY), see the module doc.
        self.relayed = False
        self._subscriptions: set[Subscription] = set()
        self._callbacks: list[Callable[[Event], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        self._loop = asyncio.get_running_loop()
        subscription = Subscription()
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    def listen(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call `callback` synchronously, on the event loop's thread, for every event; returns the
        function that stops it."""
        self._loop = _running_loop() or self._loop
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def publish(self, type_: str, job_id: str, data: dict[str, Any]) -> None:
        """Store the event, then deliver it to every listener, on the event loop's thread whoever
        calls. (A job's state changes store theirs in their own transaction: Pipeline.transition.)"""
        running = _running_loop()
        if running is None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.publish, type_, job_id, data)  # a worker thread: queues belong to the loop
            return
        self._loop = running or self._loop
        try:
            built = self.record(job_id, [(type_, data)])
        except Exception:  # the store is down: this process's listeners still hear it
            log.exception("could not store a %s event of job %s", type_, job_id)
            self.deliver({"type": type_, "jobId": job_id, "data": data})
            return
        self.announce(built)

    def record(self, job_id: str, events: list[tuple[str, dict[str, Any]]], connection: Connection | None = None) -> list[Event]:
        """Store events (in the caller's transaction, when it gives its `connection`) and give
        them back numbered; `announce` delivers them once that transaction has committed."""
        built: list[Event] = [{"type": type_, "jobId": job_id, "data": data} for type_, data in events]
        if self.event_log is not None:
            last = self.event_log.append(job_id, events, connection=connection)
            if last is not None:
                for index, event in enumerate(built):
                    event["seq"] = last - len(built) + 1 + index
        return built

    def announce(self, events: list[Event]) -> None:
        """Deliver stored events here, unless the relay does (it hears them from NOTIFY)."""
        self._loop = _running_loop() or self._loop
        if not self.relayed:
            for event in events:
                self.deliver(event)

    def deliver(self, event: Event) -> None:
        """Hand an event to this process's listeners (the relay calls it for every instance's events)."""
        for subscription in self._subscriptions:
            subscription._put(event)
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:  # a broken listener must not break the pipeline
                log.exception("event listener failed")

    def close(self) -> None:
        for subscription in self._subscriptions:
            subscription._close()

"""The in-process event bus: the pipeline publishes, the WebSocket and the studio listen.

Events are the guide's `{"type", "jobId", "data"}` dicts. Each subscriber has its own
queue, so one slow listener never holds up the pipeline or the others; per job, events
reach every subscriber in the order they were published.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import contextmanager
from typing import Any, Iterator

Event = dict[str, Any]
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

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self.queue.get()
            if event is None:
                return
            if self.overflowed:
                raise SubscriberTooSlow()
            yield event


class EventBus:
    def __init__(self) -> None:
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
        """Deliver an event to every listener, on the event loop's thread whoever calls."""
        event: Event = {"type": type_, "jobId": job_id, "data": data}
        running = _running_loop()
        if running is None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, event)  # a worker thread: queues belong to the loop
            return
        self._loop = running or self._loop
        self._deliver(event)

    def _deliver(self, event: Event) -> None:
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

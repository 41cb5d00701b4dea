"""The bridge from the event bus to one browser tab: collect cheaply, flush a few times a second.

Each open page has one `ClientFeed`: a single listener on the job events (`JobService.listen`). The listener runs on
the event loop inside the pipeline's publish call, so it only filters and appends the event
to a list; the first event of a burst schedules one flush `FLUSH_INTERVAL` seconds later, and
that flush hands every collected event to the page's handlers, which update just the elements
the events are about. Nothing runs while no event arrives, and no tab ever polls the database.
The listener is removed when NiceGUI deletes the client (the tab closed and did not come back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nicegui import Client, ui

from backend.events.bus import Event
from backend.jobs.service import JobService

log = logging.getLogger(__name__)

#: Seconds between two flushes of a tab at most, however many events arrive: what each open
#: tab costs the server grows with its flushes (bench/tabs.py measures it).
FLUSH_INTERVAL = 0.5

Handler = Callable[[list[Event]], Any]
Accept = Callable[[Event], bool]


@dataclass
class _Subscriber:
    handler: Handler
    accept: Accept | None


class ClientFeed:
    """One tab's view of the event bus."""

    def __init__(self, jobs: JobService, client: Client, interval: float = FLUSH_INTERVAL):
        self.client = client
        self.interval = interval
        self._subscribers: list[_Subscriber] = []
        self._pending: list[Event] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._unsubscribe = jobs.listen(self._receive)
        client.on_delete(self.close)

    def subscribe(self, handler: Handler, accept: Accept | None = None) -> None:
        """Call `handler(events)` with the events `accept` lets through, batched per flush."""
        self._subscribers.append(_Subscriber(handler, accept))

    # Runs inside EventBus.publish, which delivers on the event loop's thread whoever publishes:
    # keep it to a filter and an append.
    def _receive(self, event: Event) -> None:
        if self._closed or not any(s.accept is None or s.accept(event) for s in self._subscribers):
            return
        self._pending.append(event)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_later(self.interval, self._flush)

    def next_flush(self) -> asyncio.Future[None]:
        """Done once the next flush has updated the page (tests await it instead of polling)."""
        waiter = self._loop.create_future()
        self._flush_waiters.append(waiter)
        return waiter

    def _flush(self) -> None:
        self._flush_handle = None
        events, self._pending = self._pending, []
        try:
            if not self._closed and events and not self.client.is_deleted:
                self._deliver(events)
        finally:
            waiters, self._flush_waiters = self._flush_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _deliver(self, events: list[Event]) -> None:
        with self.client:
            for subscriber in list(self._subscribers):
                chosen = events if subscriber.accept is None else [e for e in events if subscriber.accept(e)]
                if not chosen:
                    continue
                try:
                    result = subscriber.handler(chosen)
                    if asyncio.iscoroutine(result):
                        self._loop.create_task(result)
                except Exception:  # one broken view must not stop the others
                    log.exception("studio update failed")

    def close(self) -> None:
        self._closed = True
        self._unsubscribe()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._pending.clear()
        self._subscribers.clear()


_FEED_ATTRIBUTE = "_promptreel_feed"


def client_feed(jobs: JobService) -> ClientFeed:
    """The feed of the current page's client, made on first use."""
    client = ui.context.client
    feed = getattr(client, _FEED_ATTRIBUTE, None)
    if feed is None or feed._closed:
        feed = ClientFeed(jobs, client)
        setattr(client, _FEED_ATTRIBUTE, feed)
    return feed

"""CatchUp: one /ws connection's "subscribe from a point" (`{"type": "subscribe", "after": N}`).

The connection's live subscription is open before any subscribe is read, so every event stored
after the catch-up's read of the log is also in the live queue, and every event stored before
it is in the read: nothing falls between them. What both carry is dropped by number: per job the
connection remembers the last `seq` it sent and sends only higher ones. One lock orders the
catch-up's read-and-send against the live forwarding, so a job's events go out in `seq` order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from backend.events.log import Event

#: Stored events read per query while catching up.
PAGE = 500

ReadEvents = Callable[[str, int, int], list[Event]]  # (job id, after, limit) -> events numbered above `after`


class CatchUp:
    def __init__(self, read: ReadEvents, page: int = PAGE):
        self.read = read
        self.page = page
        #: Held while events go out, by the live forwarding and by a catch-up.
        self.lock = asyncio.Lock()
        self._sent: dict[str, int] = {}  # job id -> last seq sent (only jobs subscribed with `after`)

    async def start(self, job_id: str, after: int, send: Callable[[list[Event]], Awaitable[None]]) -> None:
        """Send the job's stored events numbered above `after`, in pages, and remember the last one
        sent; live events the same or lower are dropped from then on. Call it holding `lock`, and
        start following the job's live events before letting go of it. The read runs in a thread
        (a query); `read`'s errors (JobNotFound) propagate, nothing remembered."""
        assert self.lock.locked(), "a catch-up runs under the lock"
        cursor = after
        while True:
            page = await asyncio.to_thread(self.read, job_id, cursor, self.page)
            if page:
                await send(page)
                cursor = page[-1]["seq"]
            self._sent[job_id] = cursor
            if len(page) < self.page:
                return

    def admit(self, event: Event) -> bool:
        """Whether a live event goes out (call it holding `lock`): not when a catch-up already sent it."""
        job_id = event.get("jobId")
        seq = event.get("seq")
        last = self._sent.get(job_id) if isinstance(job_id, str) else None
        # not caught up, or not stored (the store was down)
        if last is None or not isinstance(job_id, str) or not isinstance(seq, int):
            return True
        if seq <= last:
            return False
        self._sent[job_id] = seq
        return True

    def forget(self, job_id: str) -> None:
        self._sent.pop(job_id, None)

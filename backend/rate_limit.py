"""Sliding-window counters of the service layer: jobs per user (JobService), wrong tokens per
client address (Authenticator). Every entry point (REST, /ws, studio, CLI) goes through those.

Each instance counts its own calls, so behind a load balancer with N instances a user may
create up to N times the limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

from backend.errors import RateLimited

WINDOW_SECONDS = 60.0


class RateLimiter:
    """At most `per_minute` counted calls per key within any 60 s; 0 turns it off."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._calls: dict[Hashable, deque[float]] = {}  # key None: authentication off, one shared window
        self._lock = threading.Lock()  # callers may run in the thread pool, not only on the event loop
        self._last_sweep = clock()

    def check(self, key: Hashable) -> None:
        """Count one call for `key`, or raise RateLimited (nothing counted) when over the limit."""
        if self.per_minute <= 0:
            return
        with self._lock:
            calls = self._window(key)
            retry_after = self._retry_after(calls)
            if retry_after:
                raise RateLimited(self.per_minute, retry_after)
            calls.append(self._clock())

    def check_many(self, key: Hashable, count: int) -> None:
        """Count `count` calls for `key` at once (a batch of jobs), or raise RateLimited (nothing counted)
        when they do not all fit in the window."""
        if self.per_minute <= 0:
            return
        with self._lock:
            calls = self._window(key)
            excess = len(calls) + count - self.per_minute
            if excess > 0:
                # Room for all of them once `excess` calls have left the window; never, for more than the limit.
                frees = calls[excess - 1] + WINDOW_SECONDS - self._clock() if excess <= len(calls) else WINDOW_SECONDS
                raise RateLimited(self.per_minute, max(1, math.ceil(frees)))
            calls.extend([self._clock()] * count)

    def retry_after(self, key: Hashable) -> int:
        """Whole seconds until `key` may be counted again; 0: now. Counts nothing."""
        if self.per_minute <= 0:
            return 0
        with self._lock:
            return self._retry_after(self._window(key))

    def count(self, key: Hashable) -> None:
        """Count one call for `key` (a failure, say), whatever the window holds already."""
        if self.per_minute <= 0:
            return
        with self._lock:
            calls = self._window(key)
            calls.append(self._clock())
            while len(calls) > self.per_minute:  # a key holds at most `per_minute` times
                calls.popleft()

    def _window(self, key: Hashable) -> deque[float]:
        now = self._clock()
        self._sweep(now)
        calls = self._calls.setdefault(key, deque())
        while calls and calls[0] <= now - WINDOW_SECONDS:
            calls.popleft()
        return calls

    def _retry_after(self, calls: deque[float]) -> int:
        if len(calls) < self.per_minute:
            return 0
        # Free again when the oldest call in the window leaves it; Retry-After is whole seconds.
        return max(1, math.ceil(calls[0] + WINDOW_SECONDS - self._clock()))

    def _sweep(self, now: float) -> None:
        # Forget keys idle for a whole window, at most once a window: memory follows recent keys only.
        if now - self._last_sweep < WINDOW_SECONDS:
            return
        self._last_sweep = now
        for key, calls in list(self._calls.items()):
            if not calls or calls[-1] <= now - WINDOW_SECONDS:
                del self._calls[key]

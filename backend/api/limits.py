"""Limits that keep one client from using up the service: jobs per user per minute, request size.

`RateLimiter` is an in-memory sliding window per user. Each instance counts its own requests,
so behind a load balancer with N instances a user may create up to N times the limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge, RateLimited
from .errors import error_response

WINDOW_SECONDS = 60.0


class RateLimiter:
    """At most `per_minute` accepted calls of `check` per user within any 60 s; 0 turns it off."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._calls: dict[str | None, deque[float]] = {}  # None: authentication off, one shared window
        self._lock = threading.Lock()  # routes may run in the thread pool, not only on the event loop
        self._last_sweep = clock()

    def check(self, user_name: str | None) -> None:
        """Count one call for `user_name`, or raise RateLimited (nothing counted) when over the limit."""
        if self.per_minute <= 0:
            return
        with self._lock:
            now = self._clock()
            self._sweep(now)
            calls = self._calls.setdefault(user_name, deque())
            while calls and calls[0] <= now - WINDOW_SECONDS:
                calls.popleft()
            if len(calls) >= self.per_minute:
                # Free again when the oldest call in the window leaves it; Retry-After is whole seconds.
                retry_after = max(1, math.ceil(calls[0] + WINDOW_SECONDS - now))
                raise RateLimited(self.per_minute, retry_after)
            calls.append(now)

    def tracked_users(self) -> int:
        return len(self._calls)

    def _sweep(self, now: float) -> None:
        # Forget users idle for a whole window, at most once a window: memory follows recent users only.
        if now - self._last_sweep < WINDOW_SECONDS:
            return
        self._last_sweep = now
        for user, calls in list(self._calls.items()):
            if not calls or calls[-1] <= now - WINDOW_SECONDS:
                del self._calls[user]


class BodySizeLimit:
    """Pure ASGI: refuse HTTP request bodies above `max_bytes` with 413 PAYLOAD_TOO_LARGE.

    A declared Content-Length is judged before anything is read; a chunked body is counted as
    it streams through, never buffered. WebSocket and lifespan scopes pass through untouched.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (a plain GET or HEAD): nothing to count
            return
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return

        received = 0
        refused = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not response_started:
                        await self._refuse(scope, send)
                    # The app stops as if the client had gone; its own answer is dropped below.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        error = PayloadTooLarge(self.max_bytes)
        # The rest of the body is never read, so the connection cannot be reused: say so.
        response = error_response(error.status_code, error.message, error.code, error.details, headers={"Connection": "close"})
        await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}

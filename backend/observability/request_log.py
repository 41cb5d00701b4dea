"""One log line per HTTP request and per WebSocket session, and the count of requests in the metrics.

Quiet by default: a studio tab makes many requests (pages, assets, thumbnails, media), so the
lines of answered requests go at debug level unless PROMPTREEL_LOG_REQUESTS asks for them at
info; refusals (4xx) stay at info and server errors (5xx) at error, always.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from backend.observability.logs import log_event

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from backend.observability.metrics import Metrics

log = logging.getLogger(__name__)
#: A request path longer than this is cut in the log.
MAX_LOGGED_PATH = 1000


class RequestLogMiddleware:
    """Pure ASGI: one line per HTTP request and per WebSocket session, once it has ended.

    It only watches the messages going out, so streamed bodies and WebSockets pass untouched.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None, every_request: bool = True):
        self.app = app
        self.metrics = metrics
        #: Answered requests (status < 400) at info when True, else at debug.
        self.every_request = every_request

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
        name = getattr(user, "name", None)
        if name is not None:
            fields["user"] = name
        event = "http_request" if scope["type"] == "http" else "websocket"
        if status is not None and status >= 500:
            level = logging.ERROR
        elif self.every_request or (status is not None and status >= 400 and status != 101):
            level = logging.INFO
        else:
            level = logging.DEBUG
        log_event(log, event, level, **fields)
        if self.metrics is not None and scope["type"] == "http":
            self.metrics.count_request(fields["method"], status)

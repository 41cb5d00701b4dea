"""HTTP limits that keep one client from using up the service: request size.

Jobs per user per minute are counted in the service layer (backend/rate_limit.py, JobService),
so the studio and the CLI meet the same limit as the API.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api.errors import error_response
from backend.errors import PayloadTooLarge


class BodySizeLimit:
    """Pure ASGI: refuse HTTP request bodies above `max_bytes` with 413 PAYLOAD_TOO_LARGE.

    A declared Content-Length is judged before anything is read; a chunked body is counted as
    it streams through, never buffered. WebSocket and lifespan scopes pass through untouched.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[re.Pattern[str], int] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        #: Paths that take larger bodies (pictures: POST /api/v1/uploads, the studio's picture input).
        self.larger = larger or {}

    def limit_for(self, path: str) -> int:
        return next((limit for pattern, limit in self.larger.items() if pattern.fullmatch(path)), self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limit_for(scope["path"])
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (a plain GET or HEAD): nothing to count
            return
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await self._refuse(scope, send, max_bytes)
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
                if received > max_bytes:
                    refused = True
                    if not response_started:
                        await self._refuse(scope, send, max_bytes)
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

    async def _refuse(self, scope: Scope, send: Send, max_bytes: int) -> None:
        error = PayloadTooLarge(max_bytes)
        # The rest of the body is never read, so the connection cannot be reused: say so.
        response = error_response(error.status_code, error.message, error.code, error.details, headers={"Connection": "close"})
        await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}

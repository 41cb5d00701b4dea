"""uvicorn's HTTP protocol with a deadline for each request's line and headers (slowloris).

uvicorn has no such timeout: `timeout_keep_alive` only runs between requests and is reset by every
byte received, so a client that sends a header a byte at a time holds its connection (and a file
descriptor) for as long as it likes. Here a request's head must be complete within `timeout`
seconds of the connection opening, or of the previous response on a kept-alive connection; the
connection is dropped otherwise. Bodies and responses are not timed (uploads, downloads and
/ws run as long as they need), and a connection that became a WebSocket is left alone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger(__name__)


class HeaderDeadline(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """httptools' protocol (h11's without it), as uvicorn's "auto" picks; `timeout` is set by `with_header_timeout`."""

    timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)
        # A new request cycle: its head is complete. Another protocol: the connection is a WebSocket now.
        if self.cycle is not cycle or self.transport.get_protocol() is not self:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # idle, waiting for the next request (none pipelined)
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.info("dropped a connection that sent no complete request head within %s s", self.timeout)
            self.transport.close()


def with_header_timeout(timeout: float) -> type[asyncio.Protocol]:
    """The protocol class for uvicorn's `http=` option, its heads due within `timeout` seconds."""
    return type("HeaderDeadlineProtocol", (HeaderDeadline,), {"timeout": timeout})

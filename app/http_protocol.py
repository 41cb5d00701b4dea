"""uvicorn's HTTP protocol with a deadline for each request's line, headers and body (slowloris).

uvicorn has no such timeout: `timeout_keep_alive` only runs between requests and is reset by every
byte received, so a client that sends a header (or its body) a byte at a time holds its connection
(and a file descriptor) for as long as it likes. Here a request must have arrived whole, head and
body, within `timeout` seconds of the connection opening, or of the previous response on a
kept-alive connection; the connection is dropped otherwise. A body is at most
PROMPTREEL_MAX_BODY_BYTES (64 KB) anyway. Responses are not timed (downloads and long requests
run as long as they need), and a connection that became a WebSocket is left alone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger(__name__)


class HeaderDeadline:
    """Mixed into one of uvicorn's HTTP protocols (httptools' or h11's) by `with_header_timeout`;
    it uses their `cycle`, `transport`, `loop` and `timeout_keep_alive_task`."""

    timeout: float = 10.0
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    timeout_keep_alive_task: asyncio.TimerHandle | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._arrived: Any = None  # the last request cycle that arrived whole

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]  # a mixin: uvicorn's protocol has it
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]  # a mixin: uvicorn's protocol has it
        if self.transport.get_protocol() is not self:  # the connection is a WebSocket now
            self._disarm()
            return
        # A request whose body is complete too (`more_body` turns False at the message's end);
        # an earlier one that arrived whole stays current until the next head is complete.
        cycle = self.cycle
        if cycle is not None and cycle is not self._arrived and not cycle.more_body:
            self._arrived = cycle
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]  # a mixin: uvicorn's protocol has it
        if self.timeout_keep_alive_task is not None:  # idle, waiting for the next request (none pipelined)
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]  # a mixin: uvicorn's protocol has it

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
            log.info("dropped a connection that sent no complete request within %s s", self.timeout)
            self.transport.close()


def with_header_timeout(timeout: float, base: type[asyncio.Protocol] = AutoHTTPProtocol) -> type[asyncio.Protocol]:
    """The protocol class for uvicorn's `http=` option, its heads due within `timeout` seconds.
    `base`: uvicorn's protocol to extend; by default the one its "auto" picks (httptools, else h11)."""
    return type("HeaderDeadlineProtocol", (HeaderDeadline, base), {"timeout": timeout})

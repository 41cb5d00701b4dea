"""What the three fake providers share: a Starlette app served by uvicorn on a loopback port in
a daemon thread, a record of every request it saw, scripted replies, and ways to await both.

A test drives a fake from its own thread: `script()` queues replies for a route (a 429 with
Retry-After, a 503, a refusal, a `Hold` that answers only when released), `until()` awaits a
request the fake has seen, `seen()` lists them for assertions.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


@dataclass
class Reply:
    """A scripted answer: a JSON body (dict/list), raw bytes or text, or nothing."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"

    def response(self) -> Response:
        if isinstance(self.body, (dict, list)):
            return JSONResponse(self.body, self.status, headers=self.headers, media_type=self.media_type)
        content = self.body.encode() if isinstance(self.body, str) else self.body
        return Response(content, self.status, headers=self.headers, media_type=self.media_type)


class Hold:
    """A scripted step that keeps the request waiting until `release()`: a slow provider, or
    (with a client timeout shorter than the wait) one that never answers. Then it answers with
    `then`, or carries on as the fake normally would when `then` is None."""

    def __init__(self, then: Reply | None = None, timeout: float = 120.0):
        self.then = then
        self.timeout = timeout
        self.reached = threading.Event()
        self.released = threading.Event()

    def release(self) -> None:
        self.released.set()


class Recorder:
    """ASGI middleware: records each request (body included) before the app handles it."""

    def __init__(self, app: ASGIApp, fake: FakeServer):
        self.app = app
        self.fake = fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        self.fake._record(
            Seen(scope["method"], scope["path"], scope.get("query_string", b"").decode(), headers, body, time.monotonic())
        )
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class FakeServer:
    """Base of the fakes. Subclasses give `routes()` and their own behaviour."""

    label = "fake"

    def __init__(self, key: str):
        self.key = key
        self.requests: list[Seen] = []
        self._changed = threading.Condition()
        self._scripts: dict[str, deque[Reply | Hold]] = {}
        self._taken_holds: list[Hold] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.app = Recorder(Starlette(routes=self.routes()), self)

    def routes(self) -> list[Route]:
        raise NotImplementedError

    # -- life -------------------------------------------------------------------------

    def start(self, port: int = 0) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)  # listening now: clients may connect before uvicorn's loop is up
        self._socket = sock
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"{self.label} fake", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        for hold in self._all_holds():
            hold.release()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._socket is not None, "start the fake first"
        return self._socket.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def files_url(self) -> str:
        """Where the fake's outputs are served: the same server under another host name, so that
        it is another origin than the API, as the providers' CDNs are (no key may go there)."""
        return f"http://localhost:{self.port}"

    # -- scripting ----------------------------------------------------------------------

    def script(self, route: str, *replies: Reply | Hold) -> None:
        """Queue replies for a route; each request to it takes the next one, then the fake
        behaves normally again."""
        with self._changed:
            self._scripts.setdefault(route, deque()).extend(replies)

    def _all_holds(self) -> Iterable[Hold]:
        with self._changed:
            return [item for queue in self._scripts.values() for item in queue if isinstance(item, Hold)] + list(
                self._taken_holds
            )

    async def scripted(self, route: str) -> Response | None:
        """The scripted reply for this request, if one is queued (None: behave normally)."""
        with self._changed:
            queue = self._scripts.get(route)
            item = queue.popleft() if queue else None
        if item is None:
            return None
        if isinstance(item, Hold):
            with self._changed:
                self._taken_holds.append(item)
            item.reached.set()
            await asyncio.to_thread(item.released.wait, item.timeout)
            return item.then.response() if item.then else None
        return item.response()

    # -- recording and waiting -------------------------------------------------------------

    def _record(self, seen: Seen) -> None:
        with self._changed:
            self.requests.append(seen)
            self._changed.notify_all()

    def notify(self) -> None:
        """Wake waiters after a change of state (a task moved on, a cancel arrived)."""
        with self._changed:
            self._changed.notify_all()

    def seen(self, method: str | None = None, path: str | None = None, prefix: str | None = None) -> list[Seen]:
        with self._changed:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method)
                and (path is None or r.path == path)
                and (prefix is None or r.path.startswith(prefix))
            ]

    def wait_for(self, condition: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Block until `condition()` is truthy (checked at each request or state change)."""
        with self._changed:
            result = self._changed.wait_for(condition, timeout)
        if not result:
            raise AssertionError(
                f"{self.label} fake: condition not met in {timeout}s; saw {[(r.method, r.path) for r in self.requests[-8:]]}"
            )
        return result

    async def until(self, condition: Callable[[], Any], timeout: float = 60.0) -> Any:
        return await asyncio.to_thread(self.wait_for, condition, timeout)

    async def until_request(
        self, method: str, path: str | None = None, prefix: str | None = None, count: int = 1, timeout: float = 60.0
    ) -> list[Seen]:
        return await self.until(lambda: (found := self.seen(method, path, prefix)) and len(found) >= count and found, timeout)

    # -- helpers for subclasses --------------------------------------------------------------

    def bearer_ok(self, request: Request, schemes: tuple[str, ...] = ("Bearer",)) -> bool | None:
        """True: the right key; False: a wrong key; None: no Authorization header at all."""
        header = request.headers.get("authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        return scheme in schemes and token.strip() == self.key

"""Limits with clear errors: jobs per user per minute, request body size, a /ws client that does not read."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from backend.api.errors import install_error_handlers
from backend.api.websocket import SEND_TIMEOUT
from backend.errors import RateLimited
from backend.rate_limit import WINDOW_SECONDS, RateLimiter
from tests.support.jobs import local_job, unsigned
from tests.support.server import Server
from tests.support.streams import ends_job, open_stream


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refusal(limiter: RateLimiter, user: str | None) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        limiter.check(user)
    return caught.value


# -- RateLimiter, on its own --------------------------------------------------------------------


def test_the_limit_holds_within_any_minute_and_says_when_to_retry():
    clock = FakeClock()
    limiter = RateLimiter(3, clock=clock)
    for offset in (0, 10, 20):
        clock.now = 1000 + offset
        limiter.check(None)
    clock.now = 1030
    refused = refusal(limiter, None)
    assert (refused.status_code, refused.code) == (429, "RATE_LIMITED")
    # The oldest call (t=1000) leaves the window at 1060: 30 s from now.
    assert refused.details == {"limit": 3, "retryAfter": 30} and refused.headers == {"Retry-After": "30"}
    clock.now = 1060
    limiter.check(None)  # the first call has left the window; the refused one never counted
    clock.now = 1061
    assert refusal(limiter, None).details["retryAfter"] == 9  # 1010 + 60 - 1061


def test_retry_after_is_whole_seconds_and_at_least_one():
    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock)
    limiter.check("alice")
    clock.now += WINDOW_SECONDS - 0.2
    assert refusal(limiter, "alice").headers == {"Retry-After": "1"}
    clock.now += 0.2
    limiter.check("alice")


def test_users_have_separate_windows_and_none_is_one_shared_user():
    limiter = RateLimiter(2, clock=FakeClock())
    for user in ("alice", "bob", None):
        limiter.check(user)
        limiter.check(user)
    for user in ("alice", "bob", None):
        assert refusal(limiter, user).details["limit"] == 2


class Caller:
    """A key that tells when the limiter lets go of it (a WeakSet holds only the ones still referenced)."""


def test_zero_turns_the_limit_off():
    limiter = RateLimiter(0, clock=FakeClock())
    held: weakref.WeakSet[Caller] = weakref.WeakSet()
    for _ in range(1000):
        caller = Caller()
        held.add(caller)
        limiter.check(caller)
    del caller
    assert len(held) == 0, "nothing counted, nothing kept"


def test_memory_follows_recent_users_only():
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock)
    held: weakref.WeakSet[Caller] = weakref.WeakSet()
    most = 0
    for second in range(2000):  # a new user every second for half an hour
        clock.now = 1000 + second
        caller = Caller()
        held.add(caller)
        limiter.check(caller)
        del caller
        most = max(most, len(held))
    # Idle users are forgotten once a window: at most the last two windows' users are held.
    assert most <= 2 * WINDOW_SECONDS + 1
    for _ in range(5):
        limiter.check("hammer")
    for _ in range(59):  # refused all the next minute...
        clock.now += 1
        refusal(limiter, "hammer")
    clock.now += 1
    for _ in range(5):  # ...and free once the first five are a minute old: the refusals were not counted
        limiter.check("hammer")


def test_concurrent_checks_never_let_more_through():
    limiter = RateLimiter(50)
    accepted: list[int] = []

    def hammer() -> None:
        for _ in range(100):
            try:
                limiter.check("alice")
                accepted.append(1)
            except RateLimited:
                pass

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(accepted) == 50


def test_a_rate_limited_answer_carries_retry_after():
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/api/v1/limited")
    def limited() -> None:
        raise RateLimited(3, 42)

    response = TestClient(app).post("/api/v1/limited")
    assert response.status_code == 429 and response.headers["retry-after"] == "42"
    assert response.json() == {
        "error": "Too many jobs: at most 3 per minute. Try again in 42 s.",
        "code": "RATE_LIMITED",
        "details": {"limit": 3, "retryAfter": 42},
    }


# -- rate limit, through the real server ----------------------------------------------------------


def check_rate_limited(response: httpx.Response, limit: int) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["code"] == "RATE_LIMITED" and body["details"]["limit"] == limit
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60 and body["details"]["retryAfter"] == retry_after


def test_the_fourth_job_within_a_minute_is_refused(tmp_path: Path):
    server = Server(tmp_path / "data", PROMPTREEL_RATE_LIMIT_PER_MINUTE="3").start()
    try:
        with server.client() as api:
            for _ in range(3):
                assert api.post("/api/v1/generate", json=local_job()).status_code == 201
            check_rate_limited(api.post("/api/v1/generate", json=local_job()), 3)
            assert api.get("/api/v1/jobs").headers["X-Total-Count"] == "3"  # the refused one made nothing
            assert api.get("/api/v1/jobs").status_code == 200  # only job creation is limited
    finally:
        server.stop()


def test_each_user_has_a_limit_of_its_own(tmp_path: Path):
    server = Server(
        tmp_path / "data", PROMPTREEL_RATE_LIMIT_PER_MINUTE="2", API_TOKENS="alice:alice-token-2f9c1e7a,bob:bob-token-8d41b0c3"
    ).start()
    try:
        with server.client() as api:
            alice = {"Authorization": "Bearer alice-token-2f9c1e7a"}
            bob = {"Authorization": "Bearer bob-token-8d41b0c3"}
            for _ in range(2):
                assert api.post("/api/v1/generate", json=local_job(), headers=alice).status_code == 201
            check_rate_limited(api.post("/api/v1/generate", json=local_job(), headers=alice), 2)
            assert api.post("/api/v1/generate", json=local_job(), headers=bob).status_code == 201
            assert api.get("/api/v1/jobs", headers=alice).headers["X-Total-Count"] == "2"
            assert api.get("/api/v1/jobs", headers=bob).headers["X-Total-Count"] == "1"
    finally:
        server.stop()


# -- request body size ---------------------------------------------------------------------------


BIG_JOB = json.dumps(local_job(prompt="x" * 100_000)).encode()  # ~100 KB, above the 64 KiB default


def chunked(data: bytes, size: int = 8192) -> Iterator[bytes]:
    """A generator body: httpx sends it with Transfer-Encoding: chunked, no Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def check_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.json() == {
        "error": "The request body is larger than 65536 bytes.",
        "code": "PAYLOAD_TOO_LARGE",
        "details": {"maxBytes": 65536},
    }


def test_a_body_above_the_limit_is_refused_and_creates_nothing(shared_server: Server):
    with shared_server.client() as api:
        before = api.get("/api/v1/jobs").headers["X-Total-Count"]
        json_headers = {"Content-Type": "application/json"}
        check_too_large(api.post("/api/v1/generate", content=BIG_JOB, headers=json_headers))
        check_too_large(api.post("/api/v1/generate", content=chunked(BIG_JOB), headers=json_headers))
        # Also where no route would read it, and with the CORS headers a browser needs to read it.
        refused = api.post("/api/v1/jobs", content=BIG_JOB, headers={**json_headers, "Origin": "http://localhost:3000"})
        check_too_large(refused)
        assert refused.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert api.get("/api/v1/jobs").headers["X-Total-Count"] == before


def test_bodies_within_the_limit_still_work(shared_server: Server):
    with shared_server.client() as api:
        assert api.post("/api/v1/generate", json=local_job()).status_code == 201
        small = json.dumps(local_job("a chunked request")).encode()
        created = api.post("/api/v1/generate", content=chunked(small, 16), headers={"Content-Type": "application/json"})
        assert created.status_code == 201, created.text
        assert created.json()["prompt"] == "a chunked request"
        assert api.get("/health").status_code == 200


# -- a /ws client that never reads ---------------------------------------------------------------


#: An unknown message type is answered with an error that names it: each costs the server ~1 KB to send.
FLOOD_MESSAGE = json.dumps({"type": "x" * 900}).encode()
FLOOD_CAP_BYTES = 64 * 1024 * 1024
STUCK_AFTER_SECONDS = 2.0


class NonReadingClient:
    """A raw /ws connection with tiny socket buffers, which sends but never reads."""

    def __init__(self, url: str):
        uri = parse_uri(url)
        self.protocol = ClientProtocol(uri)
        self.sock = socket.socket()
        # Set before connecting, so the advertised window is small from the first byte. A fixed
        # send buffer makes our own stall show within seconds (a tiny one trickles on for minutes).
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        self.sock.settimeout(30)
        self.sock.connect((uri.host, uri.port))
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while not (events := self.protocol.events_received()):
            self.protocol.receive_data(self.sock.recv(4096))
        assert isinstance(events[0], Response) and events[0].status_code == 101, events

    def _flush(self) -> None:
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def block_the_server(self) -> None:
        """Send messages whose answers are never read until the server stops reading them too.

        The server reads a client's next message only once it has answered the last one, so
        when our writes stall, its writes to us are stuck: the state a slow client causes.
        """
        self.sock.settimeout(STUCK_AFTER_SECONDS)  # a stall this long has no other cause
        sent = 0
        try:
            while sent < FLOOD_CAP_BYTES:
                self.protocol.send_text(FLOOD_MESSAGE)
                data = b"".join(self.protocol.data_to_send())
                self.sock.sendall(data)
                sent += len(data)
        except TimeoutError:
            return
        raise AssertionError(f"the server still reads after {sent} bytes whose answers nobody read")

    def read_to_the_end(self, timeout: float, stop_at: str) -> list[str]:
        """The text messages the server sent, until it ends the connection (pings are never
        answered) or a message contains `stop_at`."""
        self.sock.settimeout(timeout)
        texts: list[str] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:  # closed with our unread messages still queued: the kernel resets
                data = b""
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            frames = [event for event in self.protocol.events_received() if isinstance(event, Frame)]
            texts += [frame.data.decode() for frame in frames if frame.opcode is Opcode.TEXT]
            if not data or any(stop_at in text for text in texts):
                return texts

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server that logs every session: a dropped client shows only in its websocket line (opt-in)."""
    srv = Server(tmp_path / "data", PROMPTREEL_LOG_REQUESTS="true").start()
    yield srv
    srv.stop()


@pytest.fixture
def non_reading(server: Server) -> Iterator[NonReadingClient]:
    client = NonReadingClient(server.ws_url)
    try:
        client.block_the_server()
        yield client
    finally:
        client.close()  # unread data: the kernel resets the connection, which frees the server's side


async def test_a_websocket_client_that_never_reads_stalls_no_one(server: Server, non_reading: NonReadingClient):
    reader = await open_stream(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as api:
        job = (await api.post("/api/v1/generate", json=local_job())).json()
        await reader.until(lambda e: e.get("jobId") == job["id"] and e["type"] == "step_update")
        # Mid-job, the event loop is free: REST, health and a new /ws client all answer at once.
        started = time.monotonic()
        assert (await api.get("/health")).status_code == 200
        assert (await api.get("/api/v1/status")).status_code == 200
        late = await open_stream(server)
        await late.send({"type": "ping"})
        await late.until(lambda e: e.get("type") == "pong", timeout=5)
        assert time.monotonic() - started < 5
        # The normal client gets every event of the job, in order, as stored.
        done = await reader.until(ends_job(job["id"]), timeout=90)
        assert done["type"] == "job_completed", done
        stored = (await api.get(f"/api/v1/jobs/{job['id']}/events")).json()
        assert [{**e, "data": unsigned(e["data"])} for e in reader.of_job(job["id"])] == [
            {**e, "data": unsigned(e["data"])} for e in stored
        ]
        assert [event["seq"] for event in stored] == list(range(1, len(stored) + 1))
        await late.connection.close()
        await reader.connection.close()


async def test_a_websocket_client_that_never_reads_is_dropped(server: Server, non_reading: NonReadingClient):
    reader = await open_stream(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as api:
        job = (await api.post("/api/v1/generate", json=local_job())).json()
        await reader.until(ends_job(job["id"]), timeout=90)
    await reader.connection.close()
    # The job may end well before the send timeout: wait for the server to say it ended the stuck
    # client's session (its log line; the process offers no other signal) before that client reads,
    # or its reading would free the blocked send and prove nothing.
    await asyncio.to_thread(wait_for_log_lines, server, '"event": "websocket"', 2, SEND_TIMEOUT + 30)
    # Once dropped, it gets what was already on its way (at most the frame the transport took
    # before the send that waits for it to drain), then the end of the connection, and nothing
    # of the job that ran while it was stuck.
    texts = await asyncio.to_thread(non_reading.read_to_the_end, 60, stop_at='"job_completed"')
    of_job = [json.loads(text) for text in texts if job["id"] in text]
    assert len(of_job) <= 1 and not [e for e in of_job if e["type"] == "job_completed"], (
        f"the server kept sending to a client it should have dropped: {of_job}"
    )


def wait_for_log_lines(server: Server, marker: str, count: int, timeout: float) -> None:
    """Wait until the server's log holds `count` lines with `marker` (polling its file: no event to await from outside)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(marker in line for line in server.log_path.read_text().splitlines()) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} log lines with {marker} after {timeout} s")

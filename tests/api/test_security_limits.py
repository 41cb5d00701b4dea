"""Issue 18, round two: limits that hold on every entry point, against the real server.

Jobs per user per minute are counted in JobService (the studio and the API share one budget);
/ws subscriptions, integer query parameters and the time to send a request head are bounded;
wrong tokens are throttled per client address; short tokens are refused at start.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from app.http_protocol import with_header_timeout
from backend.rate_limit import RateLimiter
from tests.support.jobs import local_job
from tests.support.server import ROOT, Server, clean_env

JOB_LIMIT = 3
TOKEN = "tok-alice-6b1d93f0e27c"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SUBSCRIPTIONS = 5
HEADER_TIMEOUT = 1.0
FAILURES = 5


def same_words(message: str) -> re.Pattern[str]:
    """The API's message, its "Try again in N s" allowed a second or two of difference."""
    return re.compile(re.sub(r"in\\ \d+\\ s", r"in \\d+ s", re.escape(message)))


def open_studio(page: Page, server: Server, path: str = "/") -> None:
    page.goto(server.url + path)
    page.wait_for_function("() => window.did_handshake === true")  # NiceGUI's socket is connected


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


# -- item 5: one budget for the studio and the API --------------------------------------------------


@pytest.mark.browser
def test_the_studio_and_the_api_share_one_job_budget(tmp_path: Path, page: Page):
    server = Server(tmp_path / "data", PROMPTREEL_RATE_LIMIT_PER_MINUTE=str(JOB_LIMIT)).start()
    try:
        open_studio(page, server)
        cards = page.get_by_test_id("job-card")
        with server.client() as api:
            assert api.post("/api/v1/generate", json=local_job()).status_code == 201  # 1: REST
            for made in (2, 3):  # 2 and 3: the studio's Generate button (two prompts: a repeat makes no job)
                page.get_by_label("Prompt", exact=True).fill(f"A lighthouse on a basalt cliff, from the studio ({made})")
                page.get_by_test_id("generate").click()
                expect(cards).to_have_count(made)
            refused = api.post("/api/v1/generate", json=local_job())  # 4: REST, refused
            assert refused.status_code == 429 and refused.json()["code"] == "RATE_LIMITED", refused.text
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
            words = same_words(refused.json()["error"])

            page.get_by_label("Prompt", exact=True).fill("A lighthouse on a basalt cliff, from the studio (4)")
            page.get_by_test_id("generate").click()  # 4: the studio's form, refused in the API's words
            expect(page.get_by_test_id("form-error")).to_have_text(words)
            cards.first.get_by_test_id("rerun").click()  # 4: Run again, refused in the same words
            expect(page.locator(".q-notification").filter(has_text=words)).to_be_visible()

            assert api.get("/api/v1/jobs").headers["X-Total-Count"] == str(JOB_LIMIT)  # the refusals made nothing
        expect(cards).to_have_count(JOB_LIMIT)
    finally:
        server.stop()


# -- item 7: bounds ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Authentication on, small bounds (subscriptions, header time) to reach them quickly."""
    srv = Server(
        tmp_path_factory.mktemp("bounded") / "data",
        API_TOKENS=f"alice:{TOKEN}",
        PROMPTREEL_MAX_WS_SUBSCRIPTIONS=str(SUBSCRIPTIONS),
        PROMPTREEL_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
    ).start()
    yield srv
    srv.stop()


def cancelled_job(server: Server) -> str:
    """A real job of alice's, cancelled at once (nothing renders)."""
    with server.client() as api:
        job_id = api.post("/api/v1/generate", json=local_job(), headers=BEARER).json()["id"]
        assert api.delete(f"/api/v1/jobs/{job_id}", headers=BEARER).status_code == 200
    return job_id


def next_message(connection: ClientConnection) -> dict:
    return json.loads(connection.recv(timeout=30))


EVENT_TYPES = {"job_update", "step_update", "job_completed", "job_failed"}


def next_reply(connection: ClientConnection, events: list[dict] | None = None) -> dict:
    """The next message that answers the client (pong, error), past the job events sent meanwhile."""
    while (message := next_message(connection))["type"] in EVENT_TYPES:
        if events is not None:
            events.append(message)
    return message


# Sync clients only in this module: Playwright's sync API (the studio tests) holds the thread's event loop.
def test_a_websocket_connection_follows_a_bounded_number_of_jobs(bounded: Server):
    events: list[dict] = []
    with connect(f"{bounded.ws_url}?token={TOKEN}") as connection:
        subscribed = [f"job_other{index}" for index in range(SUBSCRIPTIONS - 1)]
        with bounded.client() as api:
            job_id = api.post("/api/v1/generate", json=local_job(), headers=BEARER).json()["id"]
            for name in [*subscribed, job_id, subscribed[0]]:  # the bound's worth, and one again (no new entry)
                connection.send(json.dumps({"type": "subscribe", "jobId": name}))
            connection.send(json.dumps({"type": "ping"}))
            assert next_reply(connection, events) == {"type": "pong"}  # nothing refused so far

            connection.send(json.dumps({"type": "subscribe", "jobId": "job_onetoomany"}))
            refused = next_reply(connection, events)
            assert refused == {
                "type": "error",
                "error": f"A connection follows at most {SUBSCRIPTIONS} jobs: unsubscribe from one first.",
                "code": "TOO_MANY_SUBSCRIPTIONS",
                "details": {"field": "jobId", "limit": SUBSCRIPTIONS},
            }
            # The connection goes on: an unsubscribe frees a place, and the jobs followed still report.
            connection.send(json.dumps({"type": "unsubscribe", "jobId": subscribed[1]}))
            connection.send(json.dumps({"type": "subscribe", "jobId": "job_onetoomany"}))
            connection.send(json.dumps({"type": "ping"}))
            assert next_reply(connection, events) == {"type": "pong"}
            assert api.delete(f"/api/v1/jobs/{job_id}", headers=BEARER).status_code == 200
        while not (events and events[-1]["type"] == "job_update" and events[-1]["data"]["status"] == "cancelled"):
            events.append(next_message(connection))
    assert {event["jobId"] for event in events} == {job_id}  # only the job followed, to its end


@pytest.mark.parametrize(
    ("path", "parameter"),
    [("/api/v1/jobs?offset={number}", "offset"), ("/api/v1/jobs/{job_id}/events?after={number}", "after")],
)
def test_integer_query_parameters_beyond_their_range_answer_422(bounded: Server, path: str, parameter: str):
    job_id = cancelled_job(bounded)
    with bounded.client() as api:
        for number in ("99999999999999999999999", str(2**63), str(2**31)):
            response = api.get(path.format(number=number, job_id=job_id), headers=BEARER)
            assert response.status_code == 422, response.text
            body = response.json()
            assert body["code"] == "VALIDATION_ERROR" and body["details"]["field"] == parameter, body
        assert api.get(path.format(number=2**31 - 1, job_id=job_id), headers=BEARER).status_code == 200  # the bound itself


def closed_by_server(sock: socket.socket, within: float) -> float | None:
    """Send a header byte at a time (each resets a keep-alive timer) until the server closes; seconds it took."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < within:
        try:
            if sock.recv(1024) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass  # still open: one more byte
        except ConnectionResetError:
            return time.monotonic() - started
        try:
            sock.sendall(b"a")
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
    return None


def test_a_client_that_sends_its_headers_slowly_is_dropped(bounded: Server):
    with connect(f"{bounded.ws_url}?token={TOKEN}") as connection:  # opened before, lasts longer
        with socket.create_connection(("127.0.0.1", bounded.port)) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            took = closed_by_server(sock, 10 * HEADER_TIMEOUT)
        assert took is not None, "the server kept a client that never finished its headers"
        assert took < HEADER_TIMEOUT + 2
        connection.send(json.dumps({"type": "ping"}))  # a WebSocket is not timed: it outlives the deadline
        assert next_reply(connection) == {"type": "pong"}
    with bounded.client() as api:  # whole requests are served as before
        assert api.get("/health").status_code == 200
        assert api.get("/api/v1/jobs", headers=BEARER).status_code == 200


def test_a_client_that_sends_its_body_slowly_is_dropped(bounded: Server):
    """A body is due with its head (it is 64 KB at most): a client that sent its head at once and
    then its body a byte at a time held its connection for as long as it liked."""
    with socket.create_connection(("127.0.0.1", bounded.port)) as sock:
        sock.sendall(
            f"POST /api/v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n{".encode()
        )
        took = closed_by_server(sock, 10 * HEADER_TIMEOUT)
    assert took is not None, "the server kept a client that never finished its body"
    assert took < HEADER_TIMEOUT + 2
    with bounded.client() as api:  # a whole request with a body is served as before
        response = api.post("/api/v1/generate", json=local_job(), headers=BEARER)
        assert response.status_code == 201, response.text
        assert api.delete(f"/api/v1/jobs/{response.json()['id']}", headers=BEARER).status_code == 200


def test_counted_failures_free_an_address_a_minute_after_the_oldest():
    now = [1000.0]
    failures = RateLimiter(3, clock=lambda: now[0])
    for second in (0, 10, 20):
        now[0] = 1000 + second
        assert failures.retry_after("10.0.0.1") == 0
        failures.count("10.0.0.1")
    now[0] = 1030
    assert failures.retry_after("10.0.0.1") == 30 and failures.retry_after("10.0.0.2") == 0  # per address
    for _ in range(1000):
        failures.count("10.0.0.1")  # a flood holds no more than the limit's worth of memory
    assert len(failures._calls["10.0.0.1"]) == 3
    now[0] = 1030 + 60
    assert failures.retry_after("10.0.0.1") == 0  # the newest failures have left the window too


async def answer_ok(scope, receive, send) -> None:
    while (await receive()).get("more_body"):  # the whole body first, as the API reads it
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("base", [HttpToolsProtocol, H11Protocol], ids=["httptools", "h11"])
def test_the_header_deadline_works_on_both_of_uvicorns_protocols(base: type):
    """uvicorn picks h11 where httptools is not installed: the deadline holds on either, and it
    restarts for each request of a kept-alive connection."""
    server = uvicorn.Server(uvicorn.Config(answer_ok, port=0, http=with_header_timeout(HEADER_TIMEOUT, base), lifespan="off"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:  # uvicorn reports its start only through this flag
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            took = closed_by_server(sock, 10 * HEADER_TIMEOUT)
        assert took is not None and took < HEADER_TIMEOUT + 2
        with socket.create_connection(("127.0.0.1", port)) as sock:  # a whole head, then a slow body
            sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
            took = closed_by_server(sock, 10 * HEADER_TIMEOUT)
        assert took is not None and took < HEADER_TIMEOUT + 2
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:  # one kept-alive connection
            for _ in range(3):
                assert client.get("/").text == "ok"
                assert client.post("/", content=b"x" * 5000).text == "ok"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.mark.browser
def test_an_ipv6_client_is_throttled_for_its_whole_64(tmp_path: Path):
    """One host commonly holds a whole IPv6 /64: counted per address, it sent a wrong token from
    each of them and was never refused. The addresses come as a local proxy forwards them
    (uvicorn trusts X-Forwarded-For from loopback, FORWARDED_ALLOW_IPS' default)."""
    server = Server(tmp_path / "data", API_TOKENS=f"alice:{TOKEN}", PROMPTREEL_AUTH_FAILURES_PER_MINUTE=str(FAILURES)).start()
    try:
        with server.client() as api:

            def from_address(address: str, token: str = "wrong-token-from-one-host") -> int:
                return api.get(
                    "/api/v1/jobs", headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": address}
                ).status_code

            assert [from_address(f"2001:db8:7:1::{number:x}") for number in range(1, FAILURES + 1)] == [401] * FAILURES
            assert from_address("2001:db8:7:1:ffff::1") == 429  # another address of the same /64
            assert from_address("2001:db8:7:1::99", TOKEN) == 429  # the right token too, as for one address
            assert from_address("2001:db8:7:2::1", TOKEN) == 200  # the next /64 is another client
            assert from_address("198.51.100.7", TOKEN) == 200
    finally:
        server.stop()


def test_wrong_tokens_are_throttled_per_address_on_every_entry_point(tmp_path: Path, page: Page):
    server = Server(tmp_path / "data", API_TOKENS=f"alice:{TOKEN}", PROMPTREEL_AUTH_FAILURES_PER_MINUTE=str(FAILURES)).start()
    try:
        with server.client() as api:
            assert api.get("/api/v1/jobs").status_code == 401  # no token at all: no guess, not counted
            for attempt in range(FAILURES - 2):
                assert api.get("/api/v1/jobs", headers={"Authorization": f"Bearer wrong-{attempt}"}).status_code == 401
            open_studio(page, server, "/login")
            for _ in range(2):  # the studio's sign-in counts on the same budget
                page.get_by_test_id("token").fill("wrong-in-the-studio")
                page.get_by_test_id("sign-in").click()
                expect(page.get_by_test_id("token")).to_have_value("")  # the page empties the field once it refused the token
                expect(page.get_by_test_id("login-error")).to_have_text(
                    "That token is not valid. Ask whoever runs this promptreel for yours."
                )
            refused = api.get("/api/v1/jobs", headers={"Authorization": "Bearer wrong-again"})
            assert refused.status_code == 429, refused.text
            body = refused.json()
            assert body["code"] == "RATE_LIMITED" and body["details"]["limit"] == FAILURES
            assert 1 <= int(refused.headers["Retry-After"]) <= 60 and body["details"]["retryAfter"] == int(
                refused.headers["Retry-After"]
            )
            # Now even the right token is refused from this address, on every entry point, in the same words.
            assert api.get("/api/v1/jobs", headers=BEARER).status_code == 429
            assert api.post("/api/v1/generate", json=local_job(), headers=BEARER).status_code == 429
            with connect(f"{server.ws_url}?token={TOKEN}") as connection:
                message = next_message(connection)
                with pytest.raises(ConnectionClosed) as closed:
                    connection.recv(timeout=30)
            assert message["type"] == "error" and message["code"] == "RATE_LIMITED" and closed.value.rcvd.code == 1013
            words = same_words(body["error"])
            assert words.fullmatch(message["error"]), message
            page.get_by_test_id("token").fill(TOKEN)
            page.get_by_test_id("sign-in").click()
            expect(page.get_by_test_id("login-error")).to_have_text(words)
            assert page.url.endswith("/login")

        # Per address: another loopback address is not throttled.
        with httpx.Client(base_url=server.url, transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=30) as other:
            assert other.get("/api/v1/jobs", headers=BEARER).status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("variable", "value", "user"),
    [
        ("API_TOKEN", "short-token", "default"),
        ("API_TOKEN", " " * 15 + "x", "default"),
        ("API_TOKENS", f"bob:{TOKEN}, alice:fifteen-chars!", "alice"),
    ],
)
def test_a_short_token_is_refused_at_start(tmp_path: Path, variable: str, value: str, user: str):
    refused = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", "1"],
        cwd=ROOT,
        env=clean_env(tmp_path, **{variable: value}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and variable + ":" in lines[0] and f"user '{user}'" in lines[0] and "at least 16" in lines[0], lines
    assert value.rpartition(":")[2] not in refused.stderr  # the token itself is not shown
    assert not (tmp_path / "promptreel.db").exists()  # nothing was started

"""Shared fixtures: a real promptreel server in a subprocess, real HTTP and WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import create_engine, text

from tests import postgres

ROOT = Path(__file__).resolve().parent.parent
PROVIDER_VARIABLES = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "REPLICATE_API_TOKEN",
    "REPLICATE_BASE_URL",
    "RUNWAYML_API_SECRET",
    "RUNWAY_API_KEY",
    "RUNWAYML_BASE_URL",
    "DATABASE_URL",
)
STARTUP_TIMEOUT = 60.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a server under test: no real keys, its own data folder."""
    # PYTEST_CURRENT_TEST would switch NiceGUI into its own test mode: the server runs as a user runs it.
    env = {key: value for key, value in os.environ.items() if key not in PROVIDER_VARIABLES and not key.startswith("PYTEST_")}
    env.update(PROMPTREEL_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", **extra)
    return env


def wait_until_answers(url: str, process: subprocess.Popen, log_path: Path, what: str) -> None:
    """Wait until `url` answers 200, or fail with the process's log if it exits or takes too long."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:  # readiness has no event to await from outside: poll the URL
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start:\n{log_path.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_process(process, signal.SIGKILL)
    raise RuntimeError(f"{what} did not answer {url} in {STARTUP_TIMEOUT}s:\n{log_path.read_text()}")


def stop_process(process: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    """Send `sig` and wait for the exit; kill a process that does not stop within 30 s."""
    if process and process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Server:
    """`python -m app serve` as a user starts it, on a free port (`command`: another way to start
    it, such as the benchmarks' `bench/harness.py serve`, given the same `--port`)."""

    def __init__(self, data_dir: Path, port: int | None = None, command: Sequence[str] = ("-m", "app", "serve"), **env: str):
        self.data_dir = data_dir
        self.command = list(command)
        self.port = port or free_port()
        self.env = clean_env(data_dir, **env)
        self.process: subprocess.Popen[str] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, ready_path: str = "/health") -> Server:
        """Start, and wait until `ready_path` answers 200 (`/docs` for a server meant to be unhealthy)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            [sys.executable, *self.command, "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_until_answers(f"{self.url}{ready_path}", self.process, self.log_path, "server")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.process, sig)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the tests that only read or validate, to keep the suite quick."""
    srv = Server(tmp_path_factory.mktemp("shared") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, driven by Playwright (sync API: for tests that are not coroutines)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (scripts/test installs it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


class EventStream:
    """A /ws connection that collects events and lets a test await the ones it needs."""

    def __init__(self, connection: websockets.ClientConnection):
        self.connection = connection
        self.events: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def next(self, timeout: float = 60) -> dict[str, Any]:
        message = json.loads(await asyncio.wait_for(self.connection.recv(), timeout))
        self.events.append(message)
        return message

    async def until(self, predicate, timeout: float = 120) -> dict[str, Any]:
        """Read events until one matches; fails with what was seen when the time is up."""

        async def read() -> dict[str, Any]:
            while True:
                message = json.loads(await self.connection.recv())
                self.events.append(message)
                if predicate(message):
                    return message

        try:
            return await asyncio.wait_for(read(), timeout)
        except TimeoutError:
            raise AssertionError(f"no matching event in {timeout}s; saw {self.events[-5:]}") from None

    def of_job(self, job_id: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("jobId") == job_id]


def ends_job(job_id: str):
    def predicate(event: dict[str, Any]) -> bool:
        return event.get("jobId") == job_id and (
            event["type"] in ("job_completed", "job_failed")
            or (event["type"] == "job_update" and event["data"]["status"] == "cancelled")
        )

    return predicate


async def open_stream(server: Server) -> EventStream:
    return EventStream(await websockets.connect(server.ws_url, max_size=None))


@pytest.fixture
async def events(server: Server) -> AsyncIterator[EventStream]:
    stream = await open_stream(server)
    yield stream
    await stream.connection.close()


def unsigned(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with its media URLs' signatures (query strings) cut off: they change with time."""
    return {key: value.split("?")[0] if key in ("image_url", "video_url") and value else value for key, value in data.items()}


def local_job(prompt: str = "A majestic mountain landscape at golden hour", **settings: Any) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "provider": "local",
        "settings": {"imageSize": "1024x1024", "videoDuration": 5, "quality": "standard", **settings},
    }


@contextmanager
def new_database() -> Iterator[str]:
    """A database of its own on the tests' PostgreSQL (tests/postgres.py starts a throwaway
    server the first time), dropped afterwards."""
    admin_url = postgres.admin_url()
    name = f"promptreel_test_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))  # name made here, not from input
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def pytest_sessionfinish(session: pytest.Session) -> None:
    postgres.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with new_database() as url:
        yield url

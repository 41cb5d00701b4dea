"""Shared fixtures and pytest hooks. The helpers they use live in tests/support/: the server under
test (`support.server`), /ws streams (`support.streams`), job bodies (`support.jobs`), PostgreSQL
(`support.postgres`), the browser (`support.browser`), a cluster and S3 (`support.cluster`, `support.s3`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.support import postgres
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.server import Server
from tests.support.streams import EventStream, open_stream


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


@pytest.fixture
async def events(server: Server) -> AsyncIterator[EventStream]:
    stream = await open_stream(server)
    yield stream
    await stream.connection.close()


def pytest_sessionfinish(session: pytest.Session) -> None:
    postgres.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres.new_database() as url:
        yield url

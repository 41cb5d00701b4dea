"""The studio's session cookie, allowed hosts and /ws origins (issue 18, items 1, 2 and 6),
against a real server: forged and planted cookies through Chromium, hosts and origins through
real HTTP and WebSocket clients."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import itsdangerous
import pytest
import websockets
from playwright.sync_api import Browser, BrowserContext, expect

from tests.support.server import ROOT, Server, clean_env

# The WebSocket tests come first: the browser fixture's Playwright loop, once started, stays for the module.

ALICE = "tok-alice-5e81c0d2"
STORAGE_SECRET = "test-storage-secret-5b0c2d9e"
OLD_PUBLIC_SECRET = "promptreel-local-studio"  # the former default, known to anyone who read the source


def session_cookie(secret: str, data: dict) -> str:
    """A session cookie exactly as Starlette's SessionMiddleware (NiceGUI's) writes one."""
    return itsdangerous.TimestampSigner(secret).sign(base64.b64encode(json.dumps(data).encode())).decode()


def session_data(secret: str, cookie: str) -> dict:
    return json.loads(base64.b64decode(itsdangerous.TimestampSigner(secret).unsign(cookie.encode())))


def get(server: Server, path: str, cookie: str | None = None, **headers: str) -> httpx.Response:
    """One request with only this cookie (no jar kept between requests), redirects not followed."""
    if cookie is not None:
        headers["Cookie"] = f"session={cookie}"
    return httpx.get(server.url + path, headers=headers, timeout=30)


def set_cookie_header(answer: httpx.Response) -> str:
    [header] = [value for value in answer.headers.get_list("set-cookie") if value.startswith("session=")]
    return header


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Authentication on, a storage secret the tests know, NiceGUI's storage in a folder of its own."""
    root = tmp_path_factory.mktemp("sessions")
    (root / "storage").mkdir()  # as on an installation that has run before
    server = Server(
        root / "data",
        API_TOKENS=f"alice:{ALICE}",
        PROMPTREEL_STORAGE_SECRET=STORAGE_SECRET,
        NICEGUI_STORAGE_PATH=str(root / "storage"),
    ).start()
    yield server
    server.stop()


def sign_in(context: BrowserContext, server: Server) -> None:
    page = context.new_page()
    page.goto(server.url + "/login")
    page.wait_for_function("() => window.did_handshake === true")
    page.get_by_test_id("token").fill(ALICE)
    page.get_by_test_id("token").press("Enter")
    page.wait_for_url(server.url + "/")
    expect(page.get_by_label("Prompt", exact=True)).to_be_visible()
    page.close()


def sign_out(context: BrowserContext, server: Server) -> None:
    page = context.new_page()
    page.goto(server.url + "/")
    page.wait_for_function("() => window.did_handshake === true")
    page.get_by_test_id("sign-out").click()
    page.wait_for_url(server.url + "/login")
    page.close()


def browser_session(context: BrowserContext) -> str:
    [cookie] = [cookie for cookie in context.cookies() if cookie["name"] == "session"]
    return cookie["value"]


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


# -- item 6: allowed hosts, /ws origins, CORS '*' ------------------------------------------------


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("hosts") / "data",
        PROMPTREEL_ALLOWED_HOSTS="studio.example, *.lan.example",
        PROMPTREEL_PUBLIC_URL="https://public.example",
    ).start()
    yield server
    server.stop()


def test_only_allowed_host_names_are_answered(named: Server):
    with named.client() as client:
        for host in ("rebind.attacker.example", f"rebind.attacker.example:{named.port}", "lan.example.evil", "localhost.evil"):
            for path in ("/api/v1/jobs", "/", "/health"):
                refused = client.get(path, headers={"Host": host})
                assert refused.status_code == 400, (host, path)
                assert refused.json() == {
                    "error": f"This service does not answer to the host {host!r};"
                    " its operator can add it to PROMPTREEL_ALLOWED_HOSTS.",
                    "code": "HOST_NOT_ALLOWED",
                    "details": {"host": host},
                }
        for host in (
            f"127.0.0.1:{named.port}",
            f"localhost:{named.port}",
            f"[::1]:{named.port}",
            "LOCALHOST",
            "studio.example",
            "box.lan.example:8443",
            "public.example",
        ):
            assert client.get("/api/v1/jobs", headers={"Host": host}).status_code == 200, host
    assert '"status": 400' in named.log_path.read_text()  # refusals are logged like any answer


async def test_ws_refuses_other_sites_origins(named: Server):
    for origin in ("https://evil.example", "null", f"http://127.0.0.1.evil.example:{named.port}"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(named.ws_url, origin=origin)
        assert refused.value.response.status_code == 403
        assert json.loads(refused.value.response.body)["code"] == "ORIGIN_NOT_ALLOWED"
    for origin in (None, f"http://127.0.0.1:{named.port}", "http://localhost:3000", "https://public.example"):
        connection = await websockets.connect(named.ws_url, origin=origin)
        await connection.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(connection.recv(), 30)) == {"type": "pong"}
        await connection.close()
    handshake = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with httpx.AsyncClient(base_url=named.url, timeout=30) as client:
        foreign = await client.get("/ws", headers={**handshake, "Host": "rebind.attacker.example"})
        assert foreign.status_code == 400 and foreign.json()["code"] == "HOST_NOT_ALLOWED"


def test_serving_on_every_interface_says_which_host_names_it_answers(tmp_path: Path):
    server = Server(
        tmp_path / "data", command=("-m", "app", "serve", "--host", "0.0.0.0"), API_TOKEN="tok-any-4c1d-0123456"
    ).start()
    try:
        assert "PROMPTREEL_ALLOWED_HOSTS" in server.log_path.read_text()
        with server.client() as client:
            assert client.get("/health", headers={"Host": "rebind.attacker.example"}).status_code == 400
    finally:
        server.stop()


def test_cors_origins_star_is_refused_at_start(tmp_path: Path):
    refused = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", "1"],
        cwd=ROOT,
        env=clean_env(tmp_path, PROMPTREEL_CORS_ORIGINS="*"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "PROMPTREEL_CORS_ORIGINS='*'" in refused.stderr and "list the origins" in refused.stderr


# -- item 1: the storage secret, and session ids NiceGUI did not issue -------------------------


def test_the_storage_secret_is_random_kept_private_and_the_old_constant_signs_nothing(tmp_path: Path):
    server = Server(tmp_path / "data").start()
    try:
        kept = tmp_path / "data" / "storage_secret"
        assert kept.stat().st_mode & 0o777 == 0o600
        secret = kept.read_text().strip()
        assert len(secret) >= 32 and secret != OLD_PUBLIC_SECRET
        planted = str(uuid.uuid4())
        answer = get(server, "/login", session_cookie(OLD_PUBLIC_SECRET, {"id": planted}))
        # Not honoured: the browser gets a fresh session, signed with the installation's own secret.
        assert session_data(secret, answer.cookies["session"])["id"] != planted
        assert secret not in server.log_path.read_text()
    finally:
        server.stop()
    again = Server(tmp_path / "data").start()  # the same secret after a restart: sessions survive it
    try:
        assert kept.read_text().strip() == secret
    finally:
        again.stop()


def test_a_session_id_nicegui_would_not_issue_starts_a_fresh_session(studio: Server):
    for forged in ("../../elsewhere/victim", "d/first", "a" * 36, str(uuid.uuid4()).upper(), 7):
        answer = get(studio, "/login", session_cookie(STORAGE_SECRET, {"id": forged}))
        fresh = session_data(STORAGE_SECRET, answer.cookies["session"])["id"]
        assert fresh != forged and str(uuid.UUID(fresh)) == fresh, forged


@pytest.mark.browser
def test_forged_cookies_write_and_delete_nothing_outside_the_storage_folder(studio: Server, browser: Browser):
    root = studio.data_dir.parent
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "victim.json").write_text("precious")
    (elsewhere / "settings.json").write_text("{}")
    before = files_under(elsewhere)
    # First a subfolder of the storage folder for `..` to climb out of, then out to `elsewhere`:
    # signing in writes the session's storage file, signing out empties (deletes) it.
    for forged, then_sign_out in (("d/first", False), ("d/../../elsewhere/victim", False), ("d/../../elsewhere/settings", True)):
        context = browser.new_context()
        try:
            context.add_cookies([{"name": "session", "value": session_cookie(STORAGE_SECRET, {"id": forged}), "url": studio.url}])
            sign_in(context, studio)
            if then_sign_out:
                sign_out(context, studio)
        finally:
            context.close()
    assert files_under(elsewhere) == before
    stored = [path.relative_to(root / "storage") for path in (root / "storage").rglob("*")]
    assert stored and all(path.parent == Path(".") and path.suffix == ".json" for path in stored), stored
    assert all(
        str(uuid.UUID(path.stem.removeprefix("storage-user-"))) == path.stem.removeprefix("storage-user-") for path in stored
    )


@pytest.mark.browser
def test_the_studios_storage_is_kept_in_the_data_dir(tmp_path: Path, browser: Browser):
    """NiceGUI's default is `.nicegui` in the working directory: wherever the server was started
    (here the repository), shared by every installation started there."""
    in_working_dir = set((ROOT / ".nicegui").glob("storage-user-*.json"))
    server = Server(tmp_path / "data", API_TOKENS=f"alice:{ALICE}", PROMPTREEL_STORAGE_SECRET=STORAGE_SECRET).start()
    context = browser.new_context()
    try:
        sign_in(context, server)  # writes the session's storage (its token fingerprint)
        session_id = session_data(STORAGE_SECRET, browser_session(context))["id"]
    finally:
        context.close()
        server.stop()
    assert (tmp_path / "data" / "sessions" / f"storage-user-{session_id}.json").is_file()
    assert set((ROOT / ".nicegui").glob("storage-user-*.json")) <= in_working_dir


# -- item 2: session fixation, cookie flags ------------------------------------------------------


@pytest.mark.browser
def test_signing_in_and_out_gives_the_browser_a_new_session(studio: Server, browser: Browser):
    planted = str(uuid.uuid4())  # as an attacker would plant it, before the victim signs in
    planted_cookie = session_cookie(STORAGE_SECRET, {"id": planted})
    context = browser.new_context()
    try:
        context.add_cookies([{"name": "session", "value": planted_cookie, "url": studio.url}])
        sign_in(context, studio)
        signed_in_cookie = browser_session(context)
        assert session_data(STORAGE_SECRET, signed_in_cookie)["id"] != planted
        attacker = get(studio, "/", planted_cookie)
        assert attacker.status_code == 307 and attacker.headers["location"] == "/login"
        victim = get(studio, "/", signed_in_cookie)
        assert victim.status_code == 200 and "promptreel studio" in victim.text
        sign_out(context, studio)
        assert (
            session_data(STORAGE_SECRET, browser_session(context))["id"] != session_data(STORAGE_SECRET, signed_in_cookie)["id"]
        )
        after = get(studio, "/", signed_in_cookie)  # the signed-in cookie, kept by someone
        assert after.status_code == 307 and after.headers["location"] == "/login"
    finally:
        context.close()


def test_the_session_cookie_is_httponly_lax_and_secure_over_https(studio: Server):
    plain = set_cookie_header(get(studio, "/login")).lower()
    assert "httponly" in plain and "samesite=lax" in plain and "secure" not in plain
    # Through a proxy uvicorn trusts (FORWARDED_ALLOW_IPS: 127.0.0.1 by default) that says HTTPS.
    proxied = set_cookie_header(get(studio, "/login", **{"X-Forwarded-Proto": "https"})).lower()
    assert "httponly" in proxied and "samesite=lax" in proxied and "; secure" in proxied


def test_an_untrusted_proxy_cannot_claim_https(tmp_path: Path):
    server = Server(tmp_path / "data", FORWARDED_ALLOW_IPS="192.0.2.1").start()  # the proxy is elsewhere
    try:
        assert "secure" not in set_cookie_header(get(server, "/login", **{"X-Forwarded-Proto": "https"})).lower()
    finally:
        server.stop()

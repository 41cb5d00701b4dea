"""Authentication, owners and signed media URLs, against a real server (and Chromium for the studio)."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from PIL import Image

from backend.auth import Authenticator, SessionRenewals
from backend.errors import SignatureInvalid
from backend.settings import Settings
from tests.support.jobs import local_job
from tests.support.server import ROOT, Server, clean_env
from tests.support.streams import EventStream, ends_job

ALICE, BOB = "tok-alice-2f9c1e7a", "tok-bob-8d41b0c3"
SECRET = "test-signing-key-0123456789"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("auth") / "data", API_TOKENS=f"alice:{ALICE}, bob:{BOB}", PROMPTREEL_SECRET_KEY=SECRET
    ).start()
    yield server
    server.stop()


def test_authenticator_signs_and_refuses_changed_or_expired_links(tmp_path: Path):
    auth = Authenticator(Settings(PROMPTREEL_DATA_DIR=tmp_path, API_TOKEN="only-one-token-of-16+"))
    assert auth.enabled and auth.user_for("only-one-token-of-16+").name == "default"
    assert auth.user_for("only-on") is None and auth.user_for("") is None and auth.user_for(None) is None
    assert auth.user_for_fingerprint(auth.fingerprint("only-one-token-of-16+")).name == "default"
    assert auth.user_for_fingerprint(auth.fingerprint("other")) is None
    signed = auth.sign("/api/v1/jobs/job_abcdefgh1/download/image", now=1_000_000)
    path, _, query = signed.partition("?")
    params = dict(part.split("=") for part in query.split("&"))
    auth.check(path, params["expires"], params["signature"], now=1_000_000)  # valid
    with pytest.raises(SignatureInvalid, match="does not match"):
        auth.check(path.replace("image", "video"), params["expires"], params["signature"], now=1_000_000)
    with pytest.raises(SignatureInvalid, match="does not match"):
        auth.check(path, str(int(params["expires"]) + 600), params["signature"], now=1_000_000)
    with pytest.raises(SignatureInvalid, match="expired"):
        auth.check(path, params["expires"], params["signature"], now=int(params["expires"]) + 1)
    with pytest.raises(SignatureInvalid, match="incomplete"):
        auth.check(path, None, params["signature"])
    # A key made once is kept: links stay valid across restarts.
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    again = Authenticator(Settings(PROMPTREEL_DATA_DIR=tmp_path, API_TOKEN="only-one-token-of-16+"))
    assert again.sign(path, now=1_000_000) == signed
    off = Authenticator(Settings(PROMPTREEL_DATA_DIR=tmp_path))
    assert not off.enabled and off.user_for(None).name is None


def test_a_session_renewal_ticket_works_once_for_its_own_session_until_it_expires():
    """The studio's sign-in and sign-out tickets (the browser side: tests/test_security_sessions.py)."""
    now = [1000.0]
    renewals = SessionRenewals(seconds=60, clock=lambda: now[0])
    planted = renewals.issue("session-a", {"token_fingerprint": "f"}, then="/")
    assert renewals.take(planted, "session-b") is None, "another browser's session cannot take it"
    assert renewals.take(planted, "session-a") is None, "and that try used it up"
    ticket = renewals.issue("session-a", {"token_fingerprint": "f"}, then="/")
    renewal = renewals.take(ticket, "session-a")
    assert renewal is not None and renewal.data == {"token_fingerprint": "f"} and renewal.then == "/"
    assert renewals.take(ticket, "session-a") is None, "once"
    late = renewals.issue("session-a", {}, then="/login")
    now[0] += 60.5
    assert renewals.take(late, "session-a") is None, "expired"


def test_requests_without_a_valid_token_are_refused(secured: Server):
    with httpx.Client(base_url=secured.url, timeout=30) as api:
        for method, path in [
            ("POST", "/api/v1/generate"),
            ("GET", "/api/v1/jobs"),
            ("GET", "/api/v1/status"),
            ("GET", "/api/v1/jobs/job_x1234567"),
        ]:
            answer = api.request(method, path, json=local_job() if method == "POST" else None)
            assert answer.status_code == 401 and answer.json()["code"] == "UNAUTHORIZED", (path, answer.text)
            wrong = api.request(method, path, json=local_job() if method == "POST" else None, headers=bearer("tok-nobody"))
            assert wrong.status_code == 401 and wrong.json()["error"] == "The API token is not valid."
        assert api.get("/health").status_code == 200  # load balancers check it without a token
        assert api.get("/docs").status_code == 200
        assert api.get("/api/v1/jobs", headers=bearer(ALICE)).json() == []  # nothing was created above
    assert ALICE not in secured.log_path.read_text() and BOB not in secured.log_path.read_text()


async def test_a_user_never_sees_anothers_jobs(secured: Server):
    alice_events = await websockets.connect(f"{secured.ws_url}?token={ALICE}")
    bob_stream = await open_stream_as(secured, BOB)
    with httpx.Client(base_url=secured.url, timeout=30) as api:
        job = api.post("/api/v1/generate", json=local_job("alice's private lighthouse"), headers=bearer(ALICE)).json()
        for path in (f"/api/v1/jobs/{job['id']}", f"/api/v1/jobs/{job['id']}/events", f"/api/v1/jobs/{job['id']}/download/image"):
            answer = api.get(path, headers=bearer(BOB))
            assert answer.status_code == 404 and answer.json()["code"] == "JOB_NOT_FOUND", path
        assert api.delete(f"/api/v1/jobs/{job['id']}", headers=bearer(BOB)).json()["code"] == "JOB_NOT_FOUND"
        assert api.get("/api/v1/jobs", headers=bearer(BOB)).json() == []
        assert api.get("/api/v1/jobs", params={"q": "lighthouse"}, headers=bearer(BOB)).headers["x-total-count"] == "0"
        assert [j["id"] for j in api.get("/api/v1/jobs", headers=bearer(ALICE)).json()] == [job["id"]]
        # Alice hears her job to its end; Bob, whose own job comes after it, hears only his.
        while True:
            event = json.loads(await alice_events.recv())
            if ends_job(job["id"])(event):
                break
        bobs = api.post("/api/v1/generate", json=local_job("bob's own windmill"), headers=bearer(BOB)).json()
        await bob_stream.until(ends_job(bobs["id"]))
        assert {event["jobId"] for event in bob_stream.events} == {bobs["id"]}
        assert api.get(f"/api/v1/jobs/{job['id']}", headers=bearer(ALICE)).json()["status"] == "completed"
    await alice_events.close()
    await bob_stream.connection.close()


async def open_stream_as(server: Server, token: str) -> EventStream:
    return EventStream(await websockets.connect(f"{server.ws_url}?token={token}", max_size=None))


async def test_websocket_without_a_valid_token_is_told_and_closed(secured: Server):
    for url in (secured.ws_url, f"{secured.ws_url}?token=tok-nobody"):
        connection = await websockets.connect(url)
        message = json.loads(await connection.recv())
        assert message["type"] == "error" and message["code"] == "UNAUTHORIZED"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await connection.recv()
        assert closed.value.rcvd.code == 1008


async def test_signed_media_urls_work_without_a_header_until_changed_or_expired(secured: Server):
    stream = await open_stream_as(secured, ALICE)
    with httpx.Client(base_url=secured.url, timeout=30) as api:
        job = api.post("/api/v1/generate", json=local_job("a signed sunrise"), headers=bearer(ALICE)).json()
        end = await stream.until(ends_job(job["id"]))
        image_url = end["data"]["image_url"]
        assert "?expires=" in image_url and "&signature=" in image_url
        image = httpx.get(image_url)  # no header at all, as an <img> asks
        assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).format == "PNG"
        assert httpx.get(image_url.replace("download/image", "download/video")).json()["code"] == "SIGNATURE_INVALID"
        tampered = image_url[:-1] + ("0" if image_url[-1] != "0" else "1")
        refused = httpx.get(tampered)
        assert refused.status_code == 403 and refused.json()["code"] == "SIGNATURE_INVALID"
        path = f"/api/v1/jobs/{job['id']}/download/image"
        old = 1_000_000  # long past: a correct signature, expired
        signature = hmac.new(SECRET.encode(), f"{path}\n{old}".encode(), hashlib.sha256).hexdigest()
        expired = api.get(path, params={"expires": old, "signature": signature})
        assert expired.status_code == 403 and "expired" in expired.json()["error"]
        assert api.get(path).status_code == 401  # neither a signature nor a token
        assert api.get(path, headers=bearer(ALICE)).status_code == 200  # the owner's token works too
    await stream.connection.close()


def test_serving_beyond_loopback_needs_authentication(tmp_path: Path):
    refused = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--host", "0.0.0.0", "--port", "1"],
        cwd=ROOT,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "Set API_TOKEN" in refused.stderr and "PROMPTREEL_ALLOW_UNAUTHENTICATED" in refused.stderr
    assert not (tmp_path / "promptreel.db").exists()  # nothing was started


@pytest.mark.browser
def test_studio_asks_for_a_token_and_shows_only_the_users_jobs(secured: Server, browser):
    from playwright.sync_api import expect

    with httpx.Client(base_url=secured.url, timeout=30) as api:
        others = api.post("/api/v1/generate", json=local_job("bob's secret harbour"), headers=bearer(BOB)).json()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(secured.url + "/jobs/" + others["id"])
        page.wait_for_url("**/login")
        page.get_by_test_id("token").fill("tok-wrong")
        page.get_by_test_id("sign-in").click()
        expect(page.get_by_test_id("login-error")).to_have_text(
            "That token is not valid. Ask whoever runs this promptreel for yours."
        )
        page.screenshot(path=str(secured.data_dir / "login.png"))
        page.get_by_test_id("token").fill(ALICE)
        page.get_by_test_id("token").press("Enter")
        page.wait_for_url(secured.url + "/")
        page.wait_for_function("() => window.did_handshake === true")
        page.get_by_label("Prompt", exact=True).fill("alice's studio balloon")
        page.get_by_label("Prompt", exact=True).press("Control+Enter")
        item = page.locator("[data-job-id]").filter(has_text="alice's studio balloon")
        expect(item.get_by_test_id("job-status")).to_have_text("Completed", timeout=120_000)
        with httpx.Client(base_url=secured.url, timeout=30) as api:
            alices = api.get("/api/v1/jobs", headers=bearer(ALICE)).json()
        expect(page.locator("[data-job-id]")).to_have_count(len(alices))  # hers, and Bob's are not listed
        expect(page.locator(f'[data-job-id="{others["id"]}"]')).to_have_count(0)
        thumbnail = item.get_by_test_id("thumbnail")
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())
        href = item.get_by_test_id("download-video").get_attribute("href")
        assert "signature=" in href
        assert httpx.get(secured.url + href).headers["content-type"] == "video/mp4"  # no header needed
        page.screenshot(path=str(secured.data_dir / "studio-signed-in.png"))
        page.goto(secured.url + "/jobs/" + others["id"])
        expect(page.get_by_text("We could not find that job")).to_be_visible()
        page.get_by_test_id("sign-out").click()
        page.wait_for_url("**/login")
        page.goto(secured.url + "/")
        page.wait_for_url("**/login")
    finally:
        page.close()

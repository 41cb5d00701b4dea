"""The studio in Debian's Chromium (Playwright) against a real server: what a person sees and does.

Every wait is on something the page or the server does (Playwright's auto-waiting `expect`,
`wait_for_function`, WebSocket events); none is a fixed sleep. Screenshots at desktop and
phone width go to test-artifacts/.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from websockets.sync.client import connect

from tests.support.jobs import local_job
from tests.support.server import ROOT, Server

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
#: A local job takes seconds; on a busy two-core machine give it room.
JOB_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def studio_server(shared_server: Server) -> Server:
    """This module's own server (conftest's shared_server is made once per module)."""
    return shared_server


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(30_000)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    return page


def shot(page: Page, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def open_studio(page: Page, server: Server) -> None:
    page.goto(server.url + "/")
    expect(page.get_by_label("Prompt", exact=True)).to_be_visible()
    # the page is live once NiceGUI's socket is connected
    page.wait_for_function("() => window.did_handshake === true")


def card(page: Page, job_id: str):
    return page.locator(f'[data-job-id="{job_id}"]')


def create(server: Server, **body) -> dict:
    response = httpx.post(f"{server.url}/api/v1/generate", json=body, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def wait_for_job(server: Server, job_id: str, statuses: tuple[str, ...], timeout: float = 120) -> dict:
    """Follow /ws until the job reaches one of `statuses` (the REST read answers what it is now)."""
    with connect(server.ws_url) as ws:
        ws.send(json.dumps({"type": "subscribe", "jobId": job_id}))
        job = httpx.get(f"{server.url}/api/v1/jobs/{job_id}").json()
        deadline = time.monotonic() + timeout
        while job["status"] not in statuses:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"job {job_id} still {job['status']}"
            event = json.loads(ws.recv(timeout=remaining))
            if event.get("jobId") == job_id and "status" in event["data"] and event["type"] != "step_update":
                job = {**job, **event["data"]}
        return httpx.get(f"{server.url}/api/v1/jobs/{job_id}").json()


def test_submit_from_the_form_watch_progress_and_play_the_video(page: Page, studio_server: Server):
    open_studio(page, studio_server)
    prompt = "A lighthouse on a basalt cliff at golden hour, waves rolling in"
    with connect(studio_server.ws_url) as ws:  # a job made in the studio shows on /ws
        page.get_by_label("Prompt", exact=True).fill(prompt)
        expect(page.get_by_test_id("prompt-count")).to_have_text(f"{len(prompt)} / 4000")
        expect(page.get_by_test_id("estimate")).to_have_text("$0.00")
        page.get_by_label("Prompt", exact=True).press("Control+Enter")
        first = json.loads(ws.recv(timeout=30))
    assert first["type"] == "job_update" and first["data"]["status"] == "pending", first
    job_id = first["jobId"]
    item = card(page, job_id)
    expect(item).to_be_visible()
    expect(item.get_by_test_id("job-prompt")).to_have_text(prompt)
    expect(item.get_by_test_id("job-provider")).to_have_text("Local → Local")
    # the progress moves while the page stays as it is
    page.wait_for_function(
        """id => { const t = document.querySelector(`[data-job-id="${id}"] [data-testid=job-percent]`)?.textContent;
                   const p = parseInt(t); return p > 0 && p < 100; }""",
        arg=job_id,
        timeout=JOB_TIMEOUT_MS,
    )
    shot(page, "studio-running")
    expect(item.get_by_test_id("job-status")).to_have_text("Completed", timeout=JOB_TIMEOUT_MS)
    expect(item.get_by_test_id("job-percent")).to_have_text("100%")
    expect(item.get_by_test_id("step-image_generation")).to_be_visible()
    expect(item.get_by_test_id("job-cost")).to_have_text("$0.00")
    thumbnail = item.get_by_test_id("thumbnail")
    expect(thumbnail).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())
    assert item.get_by_test_id("download-video").get_attribute("href") == f"/api/v1/jobs/{job_id}/download/video"
    shot(page, "studio-completed")

    item.get_by_test_id("open").click()
    page.wait_for_url(f"**/jobs/{job_id}")
    expect(page.get_by_test_id("job-status")).to_have_text("Completed")
    image = page.get_by_test_id("image")
    expect(image).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth === 1024", arg=image.element_handle())
    video = page.locator("video")
    expect(video).to_have_attribute("src", f"/api/v1/jobs/{job_id}/download/video")
    assert video.evaluate("v => v.controls")
    page.wait_for_function("v => v.readyState >= 1 && v.duration > 4", arg=video.element_handle(), timeout=30_000)
    video.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function("v => v.currentTime > 0.3", arg=video.element_handle(), timeout=30_000)
    # seekable: the download route answers byte ranges
    video.evaluate("v => { v.pause(); v.currentTime = 3.5; }")
    page.wait_for_function("v => !v.seeking && Math.abs(v.currentTime - 3.5) < 0.2", arg=video.element_handle())
    expect(page.get_by_test_id("timeline-image_generation")).to_contain_text("Image Generation")
    expect(page.get_by_test_id("times-video_generation")).to_contain_text("took")
    expect(page.get_by_test_id("settings")).to_contain_text("promptreel-scene-1")
    expect(page.get_by_test_id("cost")).to_contain_text("$0.00")
    video.evaluate("v => { v.pause(); v.currentTime = 2.0; }")
    page.wait_for_function("v => !v.seeking", arg=video.element_handle())
    shot(page, "job-page-completed")
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_job_created_over_rest_appears_live_and_cancel_from_the_page(page: Page, studio_server: Server):
    open_studio(page, studio_server)
    page.evaluate("window.__sameDocument = true")
    long_job = create(studio_server, **local_job("A slow glacier calving into a green fjord", videoDuration=10))
    queued = create(studio_server, **local_job("A queued paper boat on a puddle"))
    running = card(page, long_job["id"])
    expect(running).to_be_visible()
    expect(card(page, queued["id"])).to_be_visible()
    # newest first
    ids = page.locator("[data-testid=job-card]").evaluate_all("cards => cards.map(c => c.dataset.jobId)")
    assert ids.index(queued["id"]) < ids.index(long_job["id"])
    expect(running.get_by_test_id("job-status")).to_have_text("Generating video", timeout=JOB_TIMEOUT_MS)
    running.get_by_test_id("cancel").click()
    expect(running.get_by_test_id("job-status")).to_have_text("Cancelled", timeout=30_000)
    expect(running.get_by_test_id("cancel")).to_be_hidden()
    assert httpx.get(f"{studio_server.url}/api/v1/jobs/{long_job['id']}").json()["status"] == "cancelled"
    assert page.evaluate("window.__sameDocument") is True, "the page must not have reloaded"

    # cancel from the job page
    with_page = create(studio_server, **local_job("A kite over a windy beach", videoDuration=10))
    page.goto(f"{studio_server.url}/jobs/{with_page['id']}")
    page.wait_for_function("() => window.did_handshake === true")
    expect(page.get_by_test_id("job-status")).to_have_text("Generating video", timeout=JOB_TIMEOUT_MS)
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("job-status")).to_have_text("Cancelled", timeout=30_000)
    expect(page.get_by_test_id("timeline-video_generation")).to_contain_text("Cancelled")
    wait_for_job(studio_server, queued["id"], ("completed", "failed", "cancelled"))
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_a_provider_without_a_key_shows_why_it_cannot_be_chosen(page: Page, studio_server: Server):
    open_studio(page, studio_server)
    page.get_by_role("combobox", name="Image provider").click()
    dalle = page.get_by_role("option", name="OpenAI (GPT Image)")
    expect(dalle).to_be_visible()
    expect(dalle).to_contain_text("set OPENAI_API_KEY")
    expect(dalle).to_have_attribute("aria-disabled", "true")
    expect(page.get_by_role("option", name="FLUX.1 (Replicate)")).to_contain_text("set REPLICATE_API_TOKEN")
    shot(page, "provider-unavailable", full_page=False)
    dalle.click(force=True)  # a disabled option does nothing
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("image-provider")).to_contain_text("Local renderer")
    page.get_by_role("combobox", name="Video provider").click()
    expect(page.get_by_role("option", name="Runway")).to_contain_text("set RUNWAYML_API_SECRET")
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("provider-hint")).to_contain_text("need an API key")


def test_the_form_refuses_what_the_api_refuses(page: Page, studio_server: Server):
    open_studio(page, studio_server)
    api = httpx.post(f"{studio_server.url}/api/v1/generate", json=local_job("   "))
    assert api.status_code == 422
    page.get_by_label("Prompt", exact=True).fill("   ")
    page.get_by_test_id("generate").click()
    at_field = page.locator(".q-field", has=page.get_by_label("Prompt", exact=True)).locator(".q-field__messages")
    expect(at_field).to_have_text(api.json()["error"])  # the same sentence, at the field it concerns
    api = httpx.post(f"{studio_server.url}/api/v1/generate", json=local_job("a quiet harbour", seed="12a"))
    page.get_by_label("Prompt", exact=True).fill("a quiet harbour")
    page.get_by_label("Seed (empty for random)").fill("12a")
    page.get_by_test_id("generate").click()
    at_field = page.locator(".q-field", has=page.get_by_label("Seed (empty for random)"))
    expect(at_field).to_contain_text(api.json()["error"])


def test_the_page_of_a_failed_job_shows_its_error(page: Page, tmp_path: Path):
    """A real failure: the image a job's video step needs disappears from disk before that step runs.

    With one local slot per step kind, job B's image is made while job A's video holds the
    video slot; the test deletes B's image, then cancels A, and B's video step finds no image.
    """
    server = Server(tmp_path / "data").start()
    try:
        for attempt in range(3):
            blocker = create(server, **local_job(f"A long night drive through the desert {attempt}", videoDuration=10))
            victim = create(server, **local_job(f"A glass tower in the fog {attempt}"))
            with connect(server.ws_url) as ws:
                ws.send(json.dumps({"type": "subscribe", "jobId": victim["id"]}))
                step = httpx.get(f"{server.url}/api/v1/jobs/{victim['id']}").json()["steps"][0]
                while step["status"] != "completed":
                    event = json.loads(ws.recv(timeout=120))
                    if event["type"] == "step_update" and event["data"]["id"] == "image_generation":
                        step = event["data"]
            (server.data_dir / "media" / victim["id"] / "image.png").unlink()
            still_blocked = httpx.get(f"{server.url}/api/v1/jobs/{blocker['id']}").json()["status"] == "generating_video"
            httpx.delete(f"{server.url}/api/v1/jobs/{blocker['id']}", timeout=30)
            job = wait_for_job(server, victim["id"], ("completed", "failed", "cancelled"))
            if still_blocked:
                break
        assert still_blocked, "the blocking job always finished before the image could be removed"
        assert job["status"] == "failed", job
        page.goto(f"{server.url}/jobs/{victim['id']}")
        expect(page.get_by_test_id("job-status")).to_have_text("Failed")
        error = page.get_by_test_id("job-error")
        expect(error).to_have_text(job["error"])
        assert "Video generation failed" in job["error"] and "image" in job["error"]
        expect(page.get_by_test_id("job-error-card")).to_contain_text("This job failed")
        expect(page.get_by_test_id("timeline-video_generation")).to_contain_text("Failed")
        shot(page, "job-page-failed")
        page.goto(f"{server.url}/jobs/job_doesnotexist")
        expect(page.get_by_test_id("not-found")).to_contain_text("We could not find that job")
    finally:
        server.stop()


def test_remove_with_confirmation_search_filter_and_dark_mode(page: Page, studio_server: Server):
    done = create(studio_server, **local_job("A lone tree on a hill in spring"))
    stopped = create(studio_server, **local_job("A storm that never came"))
    assert httpx.delete(f"{studio_server.url}/api/v1/jobs/{stopped['id']}", timeout=30).json()["status"] == "cancelled"
    wait_for_job(studio_server, done["id"], ("completed", "failed", "cancelled"))
    open_studio(page, studio_server)
    page.get_by_label("Search prompts").fill("lone tree")
    expect(page.locator("[data-testid=job-card]")).to_have_count(1)
    item = card(page, done["id"])
    item.get_by_test_id("remove").click()
    page.get_by_test_id("remove-keep").click()
    expect(item).to_be_visible()
    item.get_by_test_id("remove").click()
    page.get_by_test_id("remove-confirm").click()
    expect(item).to_have_count(0)
    expect(page.get_by_test_id("empty-state")).to_have_text("Nothing matches")
    assert httpx.get(f"{studio_server.url}/api/v1/jobs/{done['id']}").status_code == 404
    page.get_by_label("Search prompts").fill("")
    page.get_by_test_id("status-filter").click()
    page.get_by_role("option", name="Cancelled").click()
    expect(page.locator("[data-testid=job-status]").first).to_have_text("Cancelled")
    statuses = page.locator("[data-testid=job-status]").all_inner_texts()
    assert statuses and set(statuses) == {"Cancelled"}, statuses
    # dark mode is remembered across pages
    page.get_by_test_id("dark-toggle").click()  # from "follows the system" (light here)
    dark = re.compile("body--dark")
    expect(page.locator("body")).to_have_class(dark)
    page.reload()
    expect(page.locator("body")).to_have_class(dark)
    page.get_by_test_id("status-filter").click()
    page.get_by_role("option", name="All statuses").click()
    expect(page.locator("[data-testid=job-card]").first).to_be_visible()
    shot(page, "studio-dark-filtered")
    page.get_by_label("Switch to light mode").click()
    expect(page.locator("body")).not_to_have_class(dark)


def test_phone_width_keyboard_and_labels(browser: Browser, studio_server: Server):
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        open_studio(page, studio_server)
        form = page.get_by_test_id("generate").bounding_box()
        first_card = page.locator("[data-testid=job-card]").first
        expect(first_card).to_be_visible()
        listed = first_card.bounding_box()
        assert form and listed and form["y"] < listed["y"], "on a phone the form comes above the list"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"page scrolls sideways ({width}px)"
        shot(page, "studio-phone-form", full_page=False)
        # every button has a name a screen reader can say
        unnamed = page.evaluate(
            """() => [...document.querySelectorAll('button, a.q-btn, [role=button]')]
                  .filter(b => b.offsetParent !== null)
                  .filter(b => !(b.getAttribute('aria-label') || b.textContent.trim()))
                  .map(b => b.outerHTML.slice(0, 120))"""
        )
        assert not unnamed, unnamed
    finally:
        context.close()


def test_keyboard_reaches_the_form_and_submits(page: Page, studio_server: Server):
    open_studio(page, studio_server)
    page.keyboard.press("Tab")  # the skip link comes first
    expect(page.locator("a.nicegui-skip-link")).to_be_focused()
    page.get_by_label("Prompt", exact=True).focus()
    page.keyboard.type("Rain on a tin roof, cosy cabin interior")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert focused.startswith("Use the example prompt"), focused  # the examples, then the providers
    page.get_by_label("Prompt", exact=True).press("Control+Enter")
    expect(page.locator("[data-testid=job-prompt]", has_text="Rain on a tin roof").first).to_be_visible()


@pytest.mark.parametrize("total", [10_000])
def test_ten_thousand_jobs_stay_fast(browser: Browser, tmp_path: Path, total: int):
    """The list reads one page: 10,000 stored jobs open, page and search quickly."""
    data_dir = tmp_path / "data"
    fill_store(data_dir, total)
    server = Server(data_dir).start()
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        started = time.monotonic()
        open_studio(page, server)
        expect(page.get_by_test_id("job-summary")).to_have_text(f"1–20 of {total:,} jobs")
        opened = time.monotonic() - started
        expect(page.locator("[data-testid=job-card]")).to_have_count(20)
        started = time.monotonic()
        page.get_by_test_id("pager").get_by_role("button", name="500", exact=True).click()
        expect(page.get_by_test_id("job-summary")).to_have_text(f"{total - 19:,}–{total:,} of {total:,} jobs")
        paged = time.monotonic() - started
        page.get_by_label("Search prompts").fill("number 4242 ")
        expect(page.get_by_test_id("job-summary")).to_have_text("1 job matches")
        assert opened < 10 and paged < 5, (opened, paged)
    finally:
        context.close()
        server.stop()


def fill_store(data_dir: Path, total: int) -> None:
    """`total` finished jobs written straight into a fresh store (migrated as the server would)."""
    from datetime import datetime, timedelta

    from sqlmodel import Session

    from backend.settings import Settings
    from backend.store.models import Job, JobStep
    from backend.system import System

    system = System(Settings(_env_file=None, PROMPTREEL_DATA_DIR=data_dir))
    system.migrate()
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with Session(system.engine) as session:
        for index in range(total):
            job_id = f"job_bulk{index:08d}"
            moment = start + timedelta(minutes=index)
            session.add(
                Job(
                    id=job_id,
                    prompt=f"Archive study number {index} ",
                    provider="local",
                    video_provider="local",
                    status="completed",
                    progress=100,
                    image_size="1024x1024",
                    video_duration=5,
                    quality="standard",
                    seed=index,
                    created_at=moment,
                    updated_at=moment + timedelta(seconds=9),
                )
            )
            for kind in ("image_generation", "video_generation"):
                session.add(
                    JobStep(job_id=job_id, kind=kind, status="completed", progress=100, started_at=moment, ended_at=moment)
                )
        session.commit()
    system.engine.dispose()


GALLERY = (
    ("A lighthouse on a basalt cliff at golden hour, waves rolling in", "1792x1024"),
    ("Neon city street at night in the rain, glowing signs and reflections", "1024x1024"),
    ("Snowy mountain range under a starry sky, aurora over a frozen lake", "1024x1792"),
)


def test_gallery_screenshots_of_real_jobs(browser: Browser, tmp_path: Path):
    """The README's screenshots: real local jobs, one still running, at desktop and phone width, light and dark.

    They land in test-artifacts/ (studio-desktop, studio-phone, studio-dark, job-page); docs/ holds copies.
    """
    server = Server(tmp_path / "data").start()
    context = browser.new_context(viewport=DESKTOP)
    try:
        finished = [
            create(server, **local_job(prompt, imageSize=size, seed=7 + index)) for index, (prompt, size) in enumerate(GALLERY)
        ]
        running = create(server, **local_job("A desert caravan at sunset, dunes and long shadows", videoDuration=10, seed=3))
        for job in finished:
            assert wait_for_job(server, job["id"], ("completed", "failed", "cancelled"))["status"] == "completed"
        page = context.new_page()
        open_studio(page, server)
        page.get_by_label("Prompt", exact=True).fill("A paper boat drifting down a flooded street after a summer storm")
        page.wait_for_function(
            """id => { const p = parseInt(document.querySelector(`[data-job-id="${id}"] [data-testid=job-percent]`)?.textContent);
                       return p >= 45 && p < 90; }""",
            arg=running["id"],
            timeout=JOB_TIMEOUT_MS,
        )
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=thumbnail]')]"
            ".filter(i => i.complete && i.naturalWidth).length >= 4"
        )
        page.mouse.move(0, 0)
        shot(page, "studio-desktop", full_page=False)

        phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        phone_page = phone.new_page()
        open_studio(phone_page, server)
        for thumbnail in phone_page.get_by_test_id("thumbnail").all():  # lazy images load when scrolled to
            thumbnail.scroll_into_view_if_needed()
            phone_page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())
        phone_page.evaluate("window.scrollTo(0, 0)")
        shot(phone_page, "studio-phone")
        phone.close()

        assert wait_for_job(server, running["id"], ("completed", "failed", "cancelled"))["status"] == "completed"
        page.get_by_test_id("dark-toggle").click()  # from "follows the system" (light here)
        expect(page.locator("body")).to_have_class(re.compile("body--dark"))
        page.mouse.move(0, 0)
        page.evaluate("document.activeElement.blur()")
        expect(card(page, running["id"]).get_by_test_id("job-status")).to_have_text("Completed")
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=thumbnail]')]"
            ".filter(i => i.complete && i.naturalWidth).length >= 4"
        )
        shot(page, "studio-dark", full_page=False)
        page.get_by_label("Switch to light mode").click()

        page.goto(f"{server.url}/jobs/{finished[0]['id']}")
        video = page.locator("video")
        page.wait_for_function("v => v.readyState >= 2", arg=video.element_handle(), timeout=30_000)
        page.get_by_test_id("log-video_generation").get_by_text("Log (").click()
        expect(page.get_by_test_id("log-video_generation").locator(".pr-log")).to_be_visible()
        expect(page.get_by_test_id("log-video_generation").locator(".pr-log")).to_contain_text("animating")
        video.evaluate("v => { v.muted = true; v.currentTime = 2.5; }")
        page.wait_for_function("v => !v.seeking && v.readyState >= 3", arg=video.element_handle())
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=page.get_by_test_id("image").element_handle())
        page.evaluate("window.scrollTo(0, 0)")
        page.mouse.move(0, 0)
        shot(page, "job-page")
    finally:
        context.close()
        server.stop()

"""ComfyUI's live previews in the studio, in Debian's Chromium (Playwright) against a real server and
the fake ComfyUI (tests/fakes/fake_comfyui.py): while the image step samples, the job's card and its
page show the latest preview where the image will be, and the image takes its place once it is made.

The fake holds the prompt in its queue until both pages are open, then pauses sampling at a known
step: the state the test looks at is fixed, every wait is on the page or the fake, none a sleep.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.fakes.fake_comfyui import FakeComfyUI
from tests.support.server import ROOT, Server

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeComfyUI]:
    server = FakeComfyUI().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def studio(fake: FakeComfyUI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("comfyui-studio") / "data", COMFYUI_URL=fake.url).start()
    yield server
    server.stop()


def live(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => window.did_handshake === true")  # NiceGUI's socket is connected


def decoded_width(page: Page, test_id: str) -> int:
    """The natural width of the picture the browser decoded (0 until it has)."""
    locator = page.get_by_test_id(test_id).first
    expect(locator).to_be_visible(timeout=TIMEOUT_MS)
    page.wait_for_function(
        'id => { const i = document.querySelector(`[data-testid="${id}"]`); return i && i.complete && i.naturalWidth > 0; }',
        arg=test_id,
        timeout=TIMEOUT_MS,
    )
    return int(locator.evaluate("image => image.naturalWidth"))


def test_the_card_and_the_job_page_show_the_preview_while_comfyui_samples(browser: Browser, studio: Server, fake: FakeComfyUI):
    fake.hold_queue = True
    fake.pause_at_step = 3  # the previews of steps 1 and 2 sent, then sampling waits
    body = {"prompt": "a paper lantern over a river", "provider": "comfyui", "settings": {"videoProvider": "local"}}
    job = httpx.post(f"{studio.url}/api/v1/generate", json=body, timeout=30).json()
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        studio_page, job_page = context.new_page(), context.new_page()
        live(studio_page, studio.url + "/")
        live(job_page, f"{studio.url}/jobs/{job['id']}")
        card = studio_page.locator(f'[data-job-id="{job["id"]}"]')
        expect(card).to_be_visible()
        expect(card.get_by_test_id("preview")).to_have_count(0)  # nothing sampled yet: the placeholder

        fake.run_queue()
        assert fake.paused.wait(TIMEOUT_MS / 1000), "the fake never reached the paused step"
        # the card: the preview where the thumbnail goes, decoded (the fake's 128 px frame, re-encoded)
        assert decoded_width(studio_page, "preview") == 128
        assert "/preview?" in (card.get_by_test_id("preview").get_attribute("src") or "")
        expect(card.get_by_test_id("thumbnail")).to_have_count(0)
        ARTIFACTS.mkdir(exist_ok=True)
        card.screenshot(path=str(ARTIFACTS / "comfyui-preview-card.png"))
        # the job page: the preview in the image's place, the placeholder hidden
        assert decoded_width(job_page, "preview") == 128
        expect(job_page.get_by_test_id("image")).to_have_count(0)
        expect(job_page.get_by_text("The image appears here when it is ready.")).to_be_hidden()
        job_page.screenshot(path=str(ARTIFACTS / "comfyui-preview-job-page.png"), full_page=True)

        fake.release()
        # the image takes the preview's place on both
        expect(card.get_by_test_id("thumbnail")).to_be_visible(timeout=TIMEOUT_MS)
        expect(card.get_by_test_id("preview")).to_have_count(0)
        expect(job_page.get_by_test_id("image")).to_be_visible(timeout=TIMEOUT_MS)
        expect(job_page.get_by_test_id("preview")).to_be_hidden()
    finally:
        context.close()

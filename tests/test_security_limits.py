"""Issue 18, round two: limits that hold on every entry point, against the real server.

Jobs per user per minute are counted in JobService (the studio and the API share one budget);
/ws subscriptions, integer query parameters and the time to send a request head are bounded;
wrong tokens are throttled per client address; short tokens are refused at start.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import Server, local_job

JOB_LIMIT = 3


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
            page.get_by_label("Prompt", exact=True).fill("A lighthouse on a basalt cliff, from the studio")
            for made in (2, 3):  # 2 and 3: the studio's Generate button
                page.get_by_test_id("generate").click()
                expect(cards).to_have_count(made)
            refused = api.post("/api/v1/generate", json=local_job())  # 4: REST, refused
            assert refused.status_code == 429 and refused.json()["code"] == "RATE_LIMITED", refused.text
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
            words = same_words(refused.json()["error"])

            page.get_by_test_id("generate").click()  # 4: the studio's form, refused in the API's words
            expect(page.get_by_test_id("form-error")).to_have_text(words)
            cards.first.get_by_test_id("rerun").click()  # 4: Run again, refused in the same words
            expect(page.locator(".q-notification").filter(has_text=words)).to_be_visible()

            assert api.get("/api/v1/jobs").headers["X-Total-Count"] == str(JOB_LIMIT)  # the refusals made nothing
        expect(cards).to_have_count(JOB_LIMIT)
    finally:
        server.stop()

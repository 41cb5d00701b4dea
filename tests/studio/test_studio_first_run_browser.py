"""A first-time user's path through the studio in Debian's Chromium (issue 19), against a real server.

An empty prompt gets its message at the field; an example prompt fills the form; a double click
on Generate makes one job; the new job is shown and scrolled into view at phone width even with
a search and status filter set (in the URL); the local renderer says what it understood. Every
wait is on something the page or the server does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from tests.support.jobs import local_job
from tests.support.server import Server

from .test_studio_browser import DESKTOP, JOB_TIMEOUT_MS, PHONE, card, create, open_studio, shot, wait_for_job

pytestmark = pytest.mark.browser

#: Issue 19's prompts the local renderer cannot draw, with what it says of them.
NOT_DRAWN = {
    "a cat sleeping on a windowsill in the rain": ("rain", "cat, sleeping, windowsill"),
    "a portrait of an old fisherman": ("none of its words (a scene chosen from the prompt)", "portrait, old, fisherman"),
    "a bowl of ramen on a wooden table": ("none of its words (a scene chosen from the prompt)", "bowl, ramen, wooden, table"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own: the test counts the jobs it holds."""
    srv = Server(tmp_path_factory.mktemp("first-run") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture
def phone(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    context.set_default_timeout(30_000)
    yield context
    context.close()


def total_jobs(server: Server) -> int:
    return int(httpx.get(f"{server.url}/api/v1/jobs", timeout=30).headers["X-Total-Count"])


def test_first_run_at_phone_width(phone: BrowserContext, server: Server):
    done = create(server, **local_job("A snowy lake at dawn, pine forest and mountains", seed=5))
    assert wait_for_job(server, done["id"], ("completed", "failed"))["status"] == "completed"
    page = phone.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # a shared link with a search and a status filter: both come from the URL
    page.goto(f"{server.url}/?q=snowy&status=completed")
    page.wait_for_function("() => window.did_handshake === true")
    expect(page.get_by_test_id("job-summary")).to_have_text("1 job matches")
    expect(page.get_by_label("Search prompts")).to_have_value("snowy")
    assert page.locator("main").count() == 1, "one main landmark"

    # an empty prompt: the sentence at the field, with the field in its error state; nothing made
    page.get_by_test_id("generate").click()
    prompt_field = page.locator(".q-field", has=page.get_by_label("Prompt", exact=True))
    expect(prompt_field).to_have_class(re.compile("q-field--error"))
    expect(prompt_field.locator(".q-field__messages")).to_have_text("Describe a scene first.")
    assert total_jobs(server) == 1

    # an example that renders well fills the form (and the error goes)
    page.get_by_label(re.compile("Use the example prompt: A red hot-air balloon")).click()
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("A red hot-air balloon over desert dunes at sunrise")
    expect(prompt_field).not_to_have_class(re.compile("q-field--error"))

    # a double click makes one job, which is shown: the filter that hid it is cleared and said so
    page.get_by_test_id("generate").dblclick()
    toast = page.locator(".q-notification", has_text="Job started.")
    expect(toast).to_contain_text("The search and status filter were cleared to show it.")
    expect(page.get_by_test_id("job-summary")).to_have_text("2 jobs")
    new_card = page.locator("[data-testid=job-card]").first
    new_id = new_card.get_attribute("data-job-id")
    assert new_id and new_id != done["id"]
    expect(toast.get_by_role("link", name="Open the new job")).to_have_attribute("href", f"/jobs/{new_id}")
    expect(new_card).to_be_in_viewport()  # at phone width the list is far below the form
    expect(page).to_have_url(f"{server.url}/")  # the cleared filter left the URL too
    shot(page, "first-run-phone", full_page=False)
    expect(new_card.get_by_test_id("job-status")).to_have_text("Completed", timeout=JOB_TIMEOUT_MS)
    expect(new_card.get_by_test_id("job-understood")).to_have_text(
        re.compile(r"Drew: red, hot-air, balloon, desert, dunes, sunrise")
    )
    assert total_jobs(server) == 2, "one click, one job"
    assert not errors, errors


def test_what_the_local_renderer_understood_and_the_polish(browser: Browser, server: Server, tmp_path: Path):
    jobs = {prompt: create(server, **local_job(prompt, seed=11)) for prompt in NOT_DRAWN}
    for job in jobs.values():
        assert wait_for_job(server, job["id"], ("completed", "failed"))["status"] == "completed"
    # the system prefers dark: the studio follows it until the user chooses
    context = browser.new_context(viewport=DESKTOP, color_scheme="dark")
    try:
        page = context.new_page()
        open_studio(page, server)
        expect(page.locator("body")).to_have_class(re.compile("body--dark"))
        for prompt, (drawn, unknown) in NOT_DRAWN.items():
            understood = card(page, jobs[prompt]["id"]).get_by_test_id("job-understood")
            expect(understood).to_contain_text(f"Drew: {drawn}")
            expect(understood).to_contain_text(f"Not understood: {unknown}")
        # the header's chips say what they count, in words
        page.get_by_label("Jobs running now").hover()
        expect(page.get_by_role("tooltip")).to_have_text("Jobs running now")
        expect(page.get_by_role("button", name="REST API documentation (opens a new tab)")).to_contain_text("API docs")
        # a long prompt scrolls inside a box of bounded height
        page.get_by_label("Prompt", exact=True).fill("a quiet harbour at dawn " * 150)
        height = page.get_by_label("Prompt", exact=True).evaluate("e => e.getBoundingClientRect().height")
        assert height <= 16 * 16 + 1, height
        shot(page, "first-run-understood-dark", full_page=False)

        cat = jobs["a cat sleeping on a windowsill in the rain"]["id"]
        page.goto(f"{server.url}/jobs/{cat}")
        expect(page.get_by_test_id("drew")).to_have_text("Drew: rain")
        expect(page.get_by_test_id("not-understood")).to_have_text("Not understood: cat, sleeping, windowsill")
        expect(page.get_by_test_id("understood")).to_contain_text(
            "For other subjects choose OpenAI (GPT Image) or FLUX on Replicate"
        )
        expect(page.get_by_role("button", name="Remove from history")).to_contain_text("Remove")
        assert page.locator("main").count() == 1
        shot(page, "first-run-job-page-dark")

        # an unknown address gets the studio's own page
        response = page.goto(f"{server.url}/no/such/page")
        assert response is not None and response.status == 404
        expect(page.get_by_text("There is no such page")).to_be_visible()
        expect(page.get_by_role("button", name="Back to the studio")).to_be_visible()
    finally:
        context.close()

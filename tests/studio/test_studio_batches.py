"""A batch in Debian's Chromium against a real server: the form's "Variants" with "Images first"
opens the batch's grid, its cards complete with their pictures, and "Animate this one" adds the
video as a new card of the batch. Every wait is on the page or the server, never a fixed sleep."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.studio.test_studio_browser import JOB_TIMEOUT_MS, context, open_studio, page, shot, studio_server, wait_for_job
from tests.support.server import Server

__all__ = ["context", "page", "studio_server"]


def test_variants_images_first_then_animate_this_one(page: Page, studio_server: Server):
    open_studio(page, studio_server)
    page.get_by_label("Prompt", exact=True).fill("A red hot-air balloon over desert dunes at sunrise")
    page.get_by_test_id("variants").get_by_role("button", name="3").click()
    page.get_by_test_id("image-only").click()
    expect(page.get_by_test_id("estimate")).to_have_text("$0.00")
    page.get_by_test_id("generate").click()

    page.wait_for_url(re.compile(r".*/batches/bat_[\w-]+$"))
    grid = page.get_by_test_id("batch-grid")
    cards = grid.get_by_test_id("job-card")
    expect(cards).to_have_count(3)
    expect(page.get_by_test_id("batch-title")).to_have_text("Batch of 3 jobs")
    ids = [cards.nth(index).get_attribute("data-job-id") for index in range(3)]
    for job_id in ids:
        assert job_id is not None
        wait_for_job(studio_server, job_id, ("completed",))
    for index in range(3):
        expect(cards.nth(index).get_by_test_id("job-status")).to_have_text("Completed", timeout=JOB_TIMEOUT_MS)
        expect(cards.nth(index).get_by_test_id("animate")).to_be_visible()
        expect(cards.nth(index).get_by_test_id("download-video")).to_be_disabled()
        page.wait_for_function(
            "img => img && img.complete && img.naturalWidth > 0",
            arg=cards.nth(index).get_by_test_id("thumbnail").element_handle(),
        )
    expect(page.get_by_test_id("batch-counts")).to_have_text("3 completed")
    expect(page.get_by_test_id("batch-cancel")).to_be_hidden()
    shot(page, "studio-batch-images")

    cards.nth(1).get_by_test_id("animate").click()
    expect(cards).to_have_count(4)
    animated = cards.nth(3)
    animated_id = animated.get_attribute("data-job-id")
    assert animated_id is not None and animated_id not in ids
    wait_for_job(studio_server, animated_id, ("completed",))
    expect(animated.get_by_test_id("job-status")).to_have_text("Completed", timeout=JOB_TIMEOUT_MS)
    expect(animated.get_by_test_id("download-video")).to_be_enabled()
    expect(animated.get_by_test_id("animate")).to_have_count(0)  # it has its video
    expect(page.get_by_test_id("batch-counts")).to_have_text("4 completed")
    shot(page, "studio-batch-animated")

    animated.get_by_test_id("rerun").click()  # the same video again: it animates the same image
    expect(cards).to_have_count(5)
    again_id = cards.nth(4).get_attribute("data-job-id")
    assert again_id is not None
    again = wait_for_job(studio_server, again_id, ("completed",))
    assert again["metadata"]["sourceJob"] == ids[1] and again["video_url"] and again["cost"]["total"] == 0

    # The job page of an image-only job: no video, and the same "Animate this one".
    page.goto(f"{studio_server.url}/jobs/{ids[0]}")
    page.wait_for_function("() => window.did_handshake === true")
    expect(page.get_by_text("Images first: this job makes no video.")).to_be_visible()
    settings = page.get_by_test_id("settings")
    expect(settings.locator('dt[data-key="Video"] + dd')).to_contain_text("none: images first")
    expect(settings.locator('dt[data-key="Video length"]')).to_have_count(0)  # no length for a video never made
    expect(settings.locator('dt[data-key="Image only"]')).to_have_count(0)  # not listed again as an extra
    expect(page.get_by_test_id("download-video")).to_be_hidden()  # nothing to download, ever
    expect(page.get_by_test_id("job-batch")).to_have_attribute("href", re.compile(r"/batches/bat_"))
    shot(page, "job-page-image-only")
    page.get_by_test_id("animate").click()
    # The new job's page (this page's own URL matches /jobs/job_... too: wait for another id).
    page.wait_for_url(lambda url: re.search(r"/jobs/job_[\w-]+$", url) is not None and not url.endswith(f"/{ids[0]}"))
    expect(page.get_by_test_id("job-status")).to_have_text("Completed", timeout=JOB_TIMEOUT_MS)
    expect(page.get_by_test_id("video")).to_be_visible()
    expect(page.get_by_test_id("download-video")).to_be_visible()  # the animated job's video, to download
    expect(page.get_by_test_id("animate")).to_be_hidden()
    assert not page.errors, page.errors  # type: ignore[attr-defined]

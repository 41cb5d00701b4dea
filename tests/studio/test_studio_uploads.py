"""The studio's own-picture input in Debian's Chromium (Playwright) against a real server: a JPEG
taken with a rotated EXIF orientation dropped on the form becomes a job whose image is the upright,
fitted picture; a pasted picture is taken too; a refused file shows the API's message."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from tests.support import pictures
from tests.support.server import Server

pytestmark = pytest.mark.browser

#: Dispatches a drag-and-drop (or a paste) of one file, as a person's browser does.
DROP_JS = """([kind, b64, name, type, selector]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  const target = document.querySelector(selector);
  if (kind === "paste") {
    target.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
  } else {
    target.dispatchEvent(new DragEvent("dragover", { dataTransfer: data, bubbles: true, cancelable: true }));
    target.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
  }
}"""


@pytest.fixture
def page(browser: Browser, shared_server: Server) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(shared_server.url + "/")
    expect(page.get_by_label("Prompt", exact=True)).to_be_visible()
    page.wait_for_function("() => window.did_handshake === true")
    yield page
    context.close()


def send(page: Page, kind: str, data: bytes, name: str, content_type: str, selector: str = "[data-testid=prompt]") -> None:
    page.evaluate(DROP_JS, [kind, base64.b64encode(data).decode(), name, content_type, selector])


def test_a_picture_dropped_on_the_form_is_animated_upright(page: Page, shared_server: Server):
    send(page, "drop", pictures.rotated_jpeg(300, 200), "photo.jpg", "image/jpeg")
    expect(page.get_by_test_id("picture-chosen")).to_be_visible()
    expect(page.get_by_test_id("picture-caption")).to_have_text("photo.jpg · 200×300")
    expect(page.get_by_test_id("image-provider")).to_be_hidden()  # the fit choice replaces it
    expect(page.get_by_test_id("estimate")).to_have_text("$0.00")  # the video only (local)
    page.get_by_label("Prompt", exact=True).fill("slow push in, leaves moving")
    with httpx.Client(base_url=shared_server.url, timeout=30) as api:
        before = {job["id"] for job in api.get("/api/v1/jobs").json()}
        page.get_by_test_id("generate").click()
        expect(page.get_by_text("Job started")).to_be_visible()
        created = [job for job in api.get("/api/v1/jobs").json() if job["id"] not in before]
        assert len(created) == 1 and created[0]["provider"] == "upload", created
        job_id = created[0]["id"]
        card = page.locator(f'[data-job-id="{job_id}"]')
        expect(card.get_by_test_id("job-status")).to_have_text("Completed", timeout=120_000)
        expect(card.get_by_test_id("job-provider")).to_have_text("Your picture → Local")
        card.get_by_test_id("open").click()
        page.wait_for_url(f"**/jobs/{job_id}")
        expect(page.get_by_text("Your picture", exact=True).first).to_be_visible()  # its settings: the image provider
        job = api.get(f"/api/v1/jobs/{job_id}").json()
        assert job["metadata"]["sourceName"] == "photo.jpg" and job["metadata"]["fit"] == "crop"
        image = api.get(f"/api/v1/jobs/{job_id}/download/image").content
    with Image.open(io.BytesIO(image)) as picture:
        rgb = picture.convert("RGB")
        assert picture.size == (1024, 1024)
        for x in (100, 512, 924):  # upright: red across the top, blue across the bottom
            assert rgb.getpixel((x, 100))[0] > 180 and rgb.getpixel((x, 924))[2] > 180


def test_a_pasted_picture_is_taken_and_can_be_put_aside(page: Page):
    send(page, "paste", pictures.png(64, 48), "image.png", "image/png")
    expect(page.get_by_test_id("picture-caption")).to_have_text("image.png · 64×48")
    page.get_by_test_id("picture-clear").click()
    expect(page.get_by_test_id("picture-chosen")).to_be_hidden()
    expect(page.get_by_test_id("image-provider")).to_be_visible()


def test_a_heic_photo_is_taken_by_its_name_when_the_browser_gives_no_type(page: Page):
    """Chromium on Linux or Windows gives a .heic file no type: the picker's `accept` lists the endings too."""
    picker = page.locator("[data-testid=picture-upload] input[type=file]")
    expect(picker).to_have_attribute("accept", re.compile(r"image/avif,.*\.heic"))
    send(page, "drop", pictures.rotated("HEIF"), "IMG_0001.HEIC", "")
    expect(page.get_by_test_id("picture-caption")).to_have_text("IMG_0001.HEIC · 200×300")
    expect(page.get_by_test_id("picture-preview").locator("img")).to_have_attribute("src", re.compile("^data:image/jpeg"))


def test_a_refused_file_shows_the_apis_message(page: Page):
    page.locator("[data-testid=picture-upload] input[type=file]").set_input_files(
        files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"just some text"}]
    )
    expect(page.get_by_test_id("picture-error")).to_have_text("The file is not a PNG, JPEG, WebP, AVIF or HEIC image.")
    send(page, "drop", pictures.png_declaring(100_000, 100_000), "bomb.png", "image/png")
    expect(page.get_by_test_id("picture-error")).to_contain_text("100000x100000 pixels")
    expect(page.get_by_test_id("picture-chosen")).to_be_hidden()

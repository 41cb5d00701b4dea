"""/docs (Swagger UI) and /redoc work offline: every file they load comes from the server itself.

Chromium is allowed to reach the server's own origin only: any request elsewhere (a CDN, a font
service, Swagger's online validator) is refused and listed, and the pages must still render.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.support.server import ROOT, Server

ARTIFACTS = ROOT / "test-artifacts"
#: Operations /docs must list (each is an `.opblock` of Swagger UI).
OPERATIONS = [
    ("POST", "/api/v1/generate"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/{job_id}"),
    ("DELETE", "/api/v1/jobs/{job_id}"),
    ("GET", "/api/v1/jobs/{job_id}/events"),
    ("GET", "/api/v1/status"),
    ("GET", "/api/v1/jobs/{job_id}/download/{type}"),
]


class LoadedFiles(HTMLParser):
    """The URLs a page loads: <script src>, <link href>."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href"}.get(tag)
        self.urls += [value for name, value in attrs if name == wanted and value]


def files_loaded_by(html: str) -> list[str]:
    parser = LoadedFiles()
    parser.feed(html)
    return parser.urls


@pytest.fixture(scope="module")
def docs_server(shared_server: Server) -> Server:
    return shared_server


def test_the_docs_pages_load_their_files_from_the_server(docs_server: Server):
    with docs_server.client() as client:
        for page, expected in (("/docs", {"js", "css", "favicon"}), ("/redoc", {"js", "favicon"})):
            answer = client.get(page)
            assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
            assert not re.search(r"https?://", answer.text), f"{page} names another site:\n{answer.text}"
            urls = files_loaded_by(answer.text)
            kinds = set()
            for url in urls:
                assert url.startswith("/"), f"{page} loads {url}"
                file = client.get(url)
                assert file.status_code == 200, (page, url, file.status_code)
                kind = "js" if url.endswith(".js") else "css" if url.endswith(".css") else "favicon"
                kinds.add(kind)
                content_type = {"js": "javascript", "css": "text/css", "favicon": "image/"}[kind]
                assert content_type in file.headers["content-type"], (url, file.headers["content-type"])
                assert len(file.content) > (100_000 if kind != "favicon" else 100), (url, len(file.content))
            assert kinds == expected, (page, urls)


@pytest.fixture
def offline_page(browser: Browser, docs_server: Server) -> Iterator[tuple[Page, list[str]]]:
    """A page that reaches the server only: every other request is aborted, and listed."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    refused: list[str] = []

    def only_the_server(route: Route) -> None:
        if route.request.url.startswith(docs_server.url + "/"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_server)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page, refused
    context.close()
    assert not errors, errors


@pytest.mark.browser
def test_swagger_ui_renders_the_operations_offline(offline_page: tuple[Page, list[str]], docs_server: Server):
    page, refused = offline_page
    page.goto(docs_server.url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("promptreel API")
    for method, path in OPERATIONS:
        block = page.locator(f".opblock-{method.lower()}").filter(has=page.locator(f'[data-path="{path}"]'))
        expect(block.first).to_be_visible()
    # An operation opens, with its typed answer (the job's schema, from the response model).
    generate = page.locator(".opblock-post").filter(has=page.locator('[data-path="/api/v1/generate"]')).first
    generate.locator(".opblock-summary").click()
    expect(generate.locator(".responses-wrapper")).to_contain_text("job_abc123")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "api-docs-offline.png"))
    assert refused == [], f"/docs asked other sites: {refused}"


@pytest.mark.browser
def test_redoc_renders_offline(offline_page: tuple[Page, list[str]], docs_server: Server):
    page, refused = offline_page
    page.goto(docs_server.url + "/redoc")
    expect(page.locator("h1")).to_contain_text("promptreel API")
    expect(page.get_by_role("menuitem").filter(has_text="Generate")).to_be_visible()
    expect(page.get_by_text("/api/v1/jobs/{job_id}/events").first).to_be_attached()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "api-redoc-offline.png"))
    assert refused == [], f"/redoc asked other sites: {refused}"


def test_the_schema_documents_the_api_only(docs_server: Server):
    """NiceGUI's /assets/{path} and the studio's pages are not API operations."""
    paths = httpx.get(f"{docs_server.url}/openapi.json", timeout=30).json()["paths"]
    assert [path for path in paths if not path.startswith("/api/v1/") and path not in ("/health", "/metrics")] == []
    assert {
        "/health",
        "/metrics",
        "/api/v1/generate",
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/events",
        "/api/v1/status",
        "/api/v1/jobs/{job_id}/download/{type}",
        "/api/v1/models",
        "/api/v1/uploads",
        "/api/v1/usage",
        "/api/v1/jobs/{job_id}/webhooks",
    } <= set(paths)

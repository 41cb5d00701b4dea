"""The API's own documentation: /openapi.json (the API's routes only), /docs (Swagger UI) and /redoc.

Swagger UI's and ReDoc's files come from the `fastapi-offline` package and are served here, under
/docs/assets: FastAPI's own pages load them from a CDN, and showed nothing offline or behind a
firewall that blocks it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import TypeAdapter

from backend.api import API_PATHS
from backend.api.schemas import EXAMPLED

OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
#: The files of `fastapi-offline`'s static folder that the pages load.
SWAGGER_JS, SWAGGER_CSS, REDOC_JS = "swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"
#: Images from this server only: ReDoc draws Redocly's logo from Redocly's CDN, whatever its options.
PAGE_POLICY = {"Content-Security-Policy": "img-src 'self' data:"}
#: The studio's icon (served by the studio under /assets), rather than FastAPI's, which is fetched from its site.
FAVICON_URL = "/assets/favicon.svg"


def is_api_route(route: APIRoute) -> bool:
    return route.path.startswith("/api/") or route.path in API_PATHS


def serve_api_docs(app: FastAPI, *, title: str, summary: str, version: str) -> None:
    """The schema of the API's own routes, and the two pages that show it, with their files."""
    app.title, app.summary, app.version = title, summary, version
    app.openapi = only_the_api(app, app.openapi)  # type: ignore[method-assign]
    # FastAPI's own /openapi.json route (docs_url and redoc_url stay None: the pages are below).
    app.openapi_url, app.docs_url, app.redoc_url = OPENAPI_URL, None, None
    app.setup()
    app.mount(ASSETS_URL, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{OPENAPI_URL}",
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/{SWAGGER_JS}",
            swagger_css_url=f"{root}{ASSETS_URL}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{root}{FAVICON_URL}",
            # No badge from Swagger's online validator (it sends the schema's URL to validator.swagger.io).
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers.update(PAGE_POLICY)
        return page

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_redoc_html(
            openapi_url=f"{root}{OPENAPI_URL}",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/{REDOC_JS}",
            redoc_favicon_url=f"{root}{FAVICON_URL}",
            with_google_fonts=False,
        )
        page.headers.update(PAGE_POLICY)
        return page

    app.add_route(DOCS_URL, swagger_ui, include_in_schema=False)
    app.add_route(REDOC_URL, redoc, include_in_schema=False)


def only_the_api(app: FastAPI, build: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """FastAPI's schema builder, after every route that is not the API's (NiceGUI's /assets/{path},
    the studio's pages, whenever they were added) is taken out of the schema."""

    def openapi() -> dict[str, Any]:
        for route in app.routes:
            if isinstance(route, APIRoute) and route.include_in_schema and not is_api_route(route):
                route.include_in_schema = False
        return with_examples_as_written(build())

    return openapi


def with_examples_as_written(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI leaves every null out of the document, the examples' too (a job's `"error": null`, which
    the job schema requires): the examples go back in as written."""
    components = schema.get("components", {}).get("schemas", {})
    for shape in EXAMPLED:
        if shape.__name__ in components:
            components[shape.__name__]["examples"] = TypeAdapter(shape).json_schema()["examples"]
    return schema

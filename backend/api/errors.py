"""Every error leaves as {"error", "code", "details"}, 404 and 405 included."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from backend.errors import ApiError
from backend.jobs.request import describe

log = logging.getLogger(__name__)
#: Paths that belong to the API (JSON errors); everything else is the studio's (HTML pages).
API_PREFIXES = ("/api/", "/health", "/metrics", "/ws")


def error_response(
    status_code: int, message: str, code: str, details: dict | None = None, headers: dict | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, "code": code, "details": details or {}}, status_code=status_code, headers=headers)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """The methods some route serves at this path, each route asked as the router asks it. Starlette's
    own 405 names only the first route's (`Allow: GET` where DELETE is served too); RFC 9110 wants all."""
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]


def _code_for(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).name  # NOT_FOUND, METHOD_NOT_ALLOWED, ...
    except ValueError:
        return "HTTP_ERROR"


async def _page(
    handler: Callable[[Request, Any], Response | Awaitable[Response]], request: Request, error: Exception
) -> Response:
    """NiceGUI's own page for the error; Starlette lets a handler be a plain or an async function."""
    answer = handler(request, error)
    return answer if isinstance(answer, Response) else await answer


def install_error_handlers(app: FastAPI) -> None:
    # NiceGUI renders its own HTML pages for 404 and 500; keep those for pages, answer JSON for the API.
    page_not_found = app.exception_handlers.get(404)
    page_error = app.exception_handlers.get(Exception)

    async def api_error(request: Request, error: ApiError) -> Response:
        # An ApiError may carry headers of its own (RateLimited: Retry-After).
        return error_response(
            error.status_code, error.message, error.code, error.details, headers=getattr(error, "headers", None)
        )

    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        problems = []
        for item in error.errors():
            text, where = describe([item])
            problems.append({"field": where, "message": text})
        details = {"field": problems[0]["field"], "errors": problems}
        return error_response(422, problems[0]["message"], "VALIDATION_ERROR", details)

    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        path = request.url.path
        # The studio may register a page of its own for unknown routes (app/pages.py); else NiceGUI's.
        not_found_page = getattr(request.app.state, "studio_not_found", None) or page_not_found
        if error.status_code == 404 and not_found_page is not None and not path.startswith(API_PREFIXES):
            return await _page(not_found_page, request, error)
        message = error.detail if isinstance(error.detail, str) else HTTPStatus(error.status_code).phrase
        if error.status_code == 404 and message == "Not Found":
            message = f"No such route: {request.method} {path}"
        headers = getattr(error, "headers", None)
        if error.status_code == 405:
            message = f"Method {request.method} is not allowed on {path}"
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(error.status_code, message, _code_for(error.status_code), {"path": path}, headers=headers)

    async def unexpected_error(request: Request, error: Exception) -> Response:
        if page_error is not None and not request.url.path.startswith(API_PREFIXES):
            return await _page(page_error, request, error)
        log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
        return error_response(500, "Something went wrong on the server; the error is in its log.", "INTERNAL_ERROR")

    app.add_exception_handler(Exception, unexpected_error)
    # Starlette types every handler as taking any Exception; each of these gets only its own class.
    app.add_exception_handler(ApiError, api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(404, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(405, http_error)  # type: ignore[arg-type]

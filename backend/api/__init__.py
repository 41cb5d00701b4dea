"""The HTTP face of the service: REST routes, the WebSocket, CORS and error bodies."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.api.batches import router as batches_router
from backend.api.errors import install_error_handlers
from backend.api.limits import BodySizeLimit
from backend.api.metrics import router as metrics_router
from backend.api.models_route import router as models_router
from backend.api.routes import router as rest_router
from backend.api.uploads import UPLOADS_PATH, body_limit
from backend.api.uploads import router as uploads_router
from backend.api.usage import router as usage_router
from backend.api.webhooks import router as webhooks_router
from backend.api.websocket import router as websocket_router
from backend.observability.request_log import RequestLogMiddleware
from backend.system import System


def mount_api(app: FastAPI, system: System) -> None:
    app.state.system = system
    # Before CORS, so CORS wraps it and a browser can read its 413.
    # Pictures are larger than JSON: the uploads route, and NiceGUI's upload route of the studio's picture input.
    picture_bodies = (re.compile(re.escape(UPLOADS_PATH)), re.compile(r"/_nicegui/client/[^/]+/upload/\d+"))
    upload_limit = dict.fromkeys(picture_bodies, body_limit(system.settings.max_upload_bytes))
    app.add_middleware(BodySizeLimit, max_bytes=system.settings.max_body_bytes, larger=upload_limit)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=system.settings.cors_origins,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Total-Count", "Content-Disposition", "Content-Range", "Accept-Ranges", "Retry-After"],
    )
    install_error_handlers(app)
    app.include_router(rest_router)
    app.include_router(batches_router)
    app.include_router(uploads_router)
    app.include_router(webhooks_router)
    app.include_router(usage_router)
    app.include_router(websocket_router)
    app.include_router(metrics_router)
    app.include_router(models_router)
    # Added last, so outermost: it logs every answer, the other middlewares' refusals included.
    app.add_middleware(RequestLogMiddleware, metrics=system.observer.metrics, every_request=system.settings.log_requests)
    serve_api_without_studio_middleware(app)


#: Served by the API alone, besides every path under /api/. Not /ws: a session pays the stack once,
#: and its timing under a client that stops reading is what tests/api/test_limits.py pins down.
API_PATHS = frozenset({"/health", "/metrics"})


def is_api_path(scope: Scope) -> bool:
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.startswith("/api/") or path in API_PATHS


def is_studio_middleware(middleware: Middleware) -> bool:
    """NiceGUI's own: its session cookie and per-session user storage, its redirects and cache headers."""
    return middleware.cls is SessionMiddleware or getattr(middleware.cls, "__module__", "").startswith("nicegui")


class ApiOrStudio:
    """Pure ASGI: API requests go to a stack without the studio's middleware, the rest to the whole one."""

    def __init__(self, api: ASGIApp, studio: ASGIApp):
        self.api = api
        self.studio = studio

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and is_api_path(scope):
            await self.api(scope, receive, send)
        else:
            await self.studio(scope, receive, send)


def serve_api_without_studio_middleware(app: FastAPI) -> None:
    """NiceGUI wraps every request in three BaseHTTPMiddlewares and a session cookie, and for a
    client without that cookie (any script) makes a user storage per request that it never drops.
    The API needs none of it (tokens, no cookies), and it was half of the server's CPU per
    generate + get pair (bench/api.py).

    The stacks are built when the first request comes, so NiceGUI's middleware (added by ui.run,
    after this) is known; the API's keeps the rest (ours, GZip, FastAPI's own) in the same order.
    """
    # Once per app: a second call (the studio's tests mount the API on NiceGUI's one app again and
    # again) wraps the original, not the wrapper, which would build every stack twice per level.
    build_whole: Callable[[], ASGIApp] = getattr(app.build_middleware_stack, "__wrapped__", app.build_middleware_stack)

    def build_both() -> ASGIApp:
        studio = build_whole()
        everything = app.user_middleware
        app.user_middleware = [middleware for middleware in everything if not is_studio_middleware(middleware)]
        try:
            api = build_whole()
        finally:
            app.user_middleware = everything
        return ApiOrStudio(api, studio)

    build_both.__wrapped__ = build_whole  # type: ignore[attr-defined]  # what a second call wraps instead
    app.build_middleware_stack = build_both  # type: ignore[method-assign]  # Starlette has no hook for this

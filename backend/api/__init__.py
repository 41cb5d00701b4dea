"""The HTTP face of the service: REST routes, the WebSocket, CORS and error bodies."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from ..observability import RequestLogMiddleware
from ..system import System
from .errors import install_error_handlers
from .limits import BodySizeLimit, RateLimiter
from .metrics import router as metrics_router
from .routes import router as rest_router
from .websocket import router as websocket_router


def mount_api(app: FastAPI, system: System) -> None:
    app.state.system = system
    app.state.rate_limiter = RateLimiter(system.settings.rate_limit_per_minute)
    # Before CORS, so CORS wraps it and a browser can read its 413.
    app.add_middleware(BodySizeLimit, max_bytes=system.settings.max_body_bytes)
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
    app.include_router(websocket_router)
    app.include_router(metrics_router)
    # Added last, so outermost: it logs every answer, the other middlewares' refusals included.
    app.add_middleware(RequestLogMiddleware, metrics=system.observer.metrics)

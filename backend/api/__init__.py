"""The HTTP face of the service: REST routes, the WebSocket, CORS and error bodies."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from ..system import System
from .errors import install_error_handlers
from .routes import router as rest_router
from .websocket import router as websocket_router


def mount_api(app: FastAPI, system: System) -> None:
    app.state.system = system
    app.add_middleware(
        CORSMiddleware,
        allow_origins=system.settings.cors_origins,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Total-Count", "Content-Disposition", "Content-Range", "Accept-Ranges"],
    )
    install_error_handlers(app)
    app.include_router(rest_router)
    app.include_router(websocket_router)

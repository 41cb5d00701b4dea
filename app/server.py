"""Serve the studio, the REST API and the WebSocket on one port (browser or native window)."""

from __future__ import annotations

import multiprocessing
import os
from importlib.metadata import version
from pathlib import Path

from fastapi.middleware.gzip import GZipMiddleware
from nicegui import app, ui
from nicegui.storage import Storage
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp

from backend.api import mount_api
from backend.api.docs import serve_api_docs
from backend.api.hosts import AllowedHosts
from backend.auth import load_storage_secret
from backend.observability.logs import configure_logging
from backend.providers.comfyui.discovery import LocalComfyUIOffer
from backend.settings import Settings
from backend.system import System
from components.session import SecureSessionCookie, SessionGuard

from .http_protocol import with_header_timeout
from .pages import register_pages

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
#: The studio's per-browser storage, in the data dir (unless NICEGUI_STORAGE_PATH names another folder).
SESSIONS_DIR = "sessions"
#: How long the native window may take to close when the server stops (s).
WINDOW_CLOSE_SECONDS = 5.0


def serve(settings: Settings, *, native: bool = False) -> None:
    configure_logging()
    system = System(settings)
    # Innermost of ours, so that RequestLogMiddleware logs its refusals.
    app.add_middleware(AllowedHosts, allowed_hosts=settings.answered_hosts)
    mount_api(app, system)
    serve_api_docs(app, title="promptreel API", summary="Prompt in, image and short video out.", version=version("promptreel"))
    storage_secret = load_storage_secret(settings)
    if "NICEGUI_STORAGE_PATH" not in os.environ:
        # NiceGUI keeps each browser's storage (a signed-in session's token fingerprint) under the
        # working directory by default: wherever the server was started, shared by every
        # installation started there. It belongs to this installation, in its data dir.
        Storage.path = (settings.data_dir / SESSIONS_DIR).resolve()
    # NiceGUI's session cookie, added here rather than by ui.run so that SessionGuard sits between it
    # and NiceGUI's storage middleware (which ui.run then appends, innermost).
    app.add_middleware(SessionGuard, renewals=system.auth.renewals)
    app.add_middleware(SessionMiddleware, secret_key=storage_secret, same_site="lax")
    app.add_middleware(SecureSessionCookie)
    app.on_startup(system.start)
    app.on_shutdown(system.stop)
    if native:
        app.on_shutdown(close_native_window)
    app.add_static_files("/assets", ASSETS_DIR)
    # The desktop app offers a ComfyUI that answers on this machine, when none is configured.
    offer = LocalComfyUIOffer(settings.comfyui_probe_url) if native and not settings.comfyui_url else None
    if offer is not None:
        app.on_startup(offer.start)
    register_pages(system, comfyui_offer=offer)
    url = f"http://{settings.host}:{settings.port}"
    print(f"promptreel {'opens a native window on' if native else 'serves on'} {url}  (API docs: {url}/docs)", flush=True)
    if settings.host in ("0.0.0.0", "::") and "*" not in settings.allowed_hosts:
        print(
            f"promptreel answers only requests for the host names {', '.join(settings.answered_hosts)}: "
            "list the names clients use in PROMPTREEL_ALLOWED_HOSTS (or set PROMPTREEL_PUBLIC_URL)",
            flush=True,
        )
    ui.run(
        host=settings.host,
        port=settings.port,
        title="promptreel",
        favicon=ASSETS_DIR / "favicon.svg",
        dark=False,  # the remembered choice applies at once; None would flash the system theme first
        reload=False,
        show=False,
        native=native,
        window_size=(1280, 860) if native else None,
        storage_secret=storage_secret,
        show_welcome_message=False,
        # uvicorn's own loggers go through configure_logging's JSON lines; requests are logged by
        # RequestLogMiddleware (one line each), so uvicorn's access log stays off.
        log_config=None,
        access_log=False,
        # Compressing every frame was about 45% of the server's CPU in a /ws fan-out to 200 clients
        # (bench/fanout.py), for frames of a few hundred bytes.
        ws_per_message_deflate=False,
        # A request's line and headers must arrive within PROMPTREEL_HEADER_TIMEOUT_SECONDS (slowloris).
        http=with_header_timeout(settings.header_timeout_seconds),
        gzip_middleware_factory=compressing,
    )


def compressing(app_: ASGIApp) -> GZipMiddleware:
    """Gzip for pages, scripts and job lists, not for a single job's JSON: at Starlette's default
    (level 9 from 500 bytes) compressing a 1 KB answer was 15% of an API call's CPU."""
    return GZipMiddleware(app_, minimum_size=4096, compresslevel=6)


def close_native_window() -> None:
    """Ctrl+C or SIGTERM stops the server; take the window along (NiceGUI only closes it for app.shutdown())."""
    if app.native.main_window:
        app.native.main_window.destroy()
    # The window lives in a child process. uvicorn ends by re-raising the signal, which skips the
    # exit handlers that would stop it: wait for it to close, and stop it if it does not.
    for child in multiprocessing.active_children():
        child.join(timeout=WINDOW_CLOSE_SECONDS)
        if child.is_alive():
            child.terminate()
            child.join(timeout=WINDOW_CLOSE_SECONDS)

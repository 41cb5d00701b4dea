"""The API's own middleware stack (backend/api/__init__.py: serve_api_without_studio_middleware)."""

from __future__ import annotations

from fastapi import FastAPI

from backend.api import serve_api_without_studio_middleware


def test_mounting_the_api_again_wraps_the_original_stack_once():
    """The studio's tests mount the API on NiceGUI's one app many times; each mount used to wrap
    the previous wrapper, so building the stack cost 2**mounts builds (the suite hung at 20)."""
    app = FastAPI()
    original = app.build_middleware_stack
    builds = 0

    def counting():
        nonlocal builds
        builds += 1
        return original()

    app.build_middleware_stack = counting  # type: ignore[method-assign]
    for _ in range(4):
        serve_api_without_studio_middleware(app)
    app.build_middleware_stack()
    assert builds == 2  # the studio's stack and the API's, once each

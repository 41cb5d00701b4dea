"""Which Host names the service answers to and which browser origins may open /ws.

A loopback service without authentication is still reachable from any web page by DNS
rebinding (the attacker's name made to resolve to 127.0.0.1): such requests carry the
attacker's name in `Host`, so only the names in `Settings.answered_hosts` are answered. A
WebSocket is not bound by CORS: /ws checks the page's `Origin` itself.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.api.errors import error_response
from backend.settings import Settings

_PASSED = "promptreel.host_allowed"


async def _mark_passed(scope: Scope, receive: Receive, send: Send) -> None:
    scope[_PASSED] = True


async def _discard(message: object) -> None:
    pass


class AllowedHosts:
    """Starlette's TrustedHostMiddleware decides; its refusal leaves as a 400 in the API's error
    format (HOST_NOT_ALLOWED), WebSocket handshakes included."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]):
        self.app = app
        self.allowed_hosts = allowed_hosts
        self._trusted = TrustedHostMiddleware(_mark_passed, allowed_hosts=allowed_hosts, www_redirect=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        await self._trusted(scope, receive, _discard)  # its own plain-text refusal is discarded
        if scope.pop(_PASSED, False):
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host")
        refusal = error_response(
            400,
            f"This service does not answer to the host {host!r}; its operator can add it to PROMPTREEL_ALLOWED_HOSTS.",
            "HOST_NOT_ALLOWED",
            {"host": host},  # not the allowed names: the asker may be the attacker
        )
        await refusal(scope, receive, send)


def origin_allowed(origin: str | None, host: str | None, settings: Settings) -> bool:
    """Whether a /ws client from `origin` may connect: none (not a browser), the studio's own
    (the same host and port as the request's, which AllowedHosts has checked), the public URL's,
    or one of PROMPTREEL_CORS_ORIGINS."""
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    if host and urlsplit(origin).netloc == host.lower():
        return True
    public = urlsplit(settings.public_url or "")
    known = {entry.rstrip("/").lower() for entry in settings.cors_origins}
    if public.netloc:
        known.add(f"{public.scheme}://{public.netloc}".lower())
    return origin in known

"""The studio's signed-in user, its session cookie and its media links.

With authentication on, /login takes a token and keeps only its fingerprint in NiceGUI's
per-browser storage; each page resolves the user once and hands it to its components. Media
links in the studio are signed (as the API's are), since a browser sends no token with an
<img> or a download link.

The session cookie (Starlette's SessionMiddleware, signed with PROMPTREEL_STORAGE_SECRET)
carries NiceGUI's session id, which NiceGUI turns into a storage file name: `SessionGuard`
drops an id NiceGUI would not have issued before any storage is touched. Signing in and out
renews the id (`renewal_link`), so a cookie planted before sign-in never becomes a signed-in one.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs

from nicegui import app, context
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.auth import Renewal, SessionRenewals, User
from backend.system import System

SESSION_KEY = "token_fingerprint"
SESSION_COOKIE = "session"  # Starlette's default name, as NiceGUI uses it
#: A browser takes up its renewed session here (the cookie can only change on an HTTP answer,
#: and sign-in happens over the page's socket).
RENEW_PATH = "/session/renew"
_RENEWAL_SCOPE_KEY = "promptreel.renewal"


def studio_user(system: System) -> User | None:
    """The signed-in user (anyone is, with authentication off); None: send them to /login."""
    return system.auth.user_for_fingerprint(app.storage.user.get(SESSION_KEY))


def sign_in(system: System, token: str, client: str) -> str | None:
    """Where to send the browser once `token` is valid (None: it is not): its new session.
    `client` (the browser's address) counts wrong tokens as the API does: TooManyWrongTokens
    once it sent too many."""
    if system.auth.user_for(token.strip(), client) is None:
        return None
    return renewal_link(system, {SESSION_KEY: system.auth.fingerprint(token.strip())}, then="/")


def sign_out(system: System) -> str:
    """Where to send the browser: a new session that is not signed in."""
    return renewal_link(system, {}, then="/login")


def renewal_link(system: System, data: dict[str, Any], then: str) -> str:
    """Empty this browser's session storage now; the returned link gives it a fresh session id
    holding `data` (and its dark-mode choice) and goes on to `then`. Called in a page's event handler."""
    old = app.storage.user
    kept = {"dark": old["dark"]} if "dark" in old else {}
    ticket = system.auth.renewals.issue(context.client.request.session["id"], {**kept, **data}, then)
    old.clear()  # the old id keeps nothing: whoever else holds it holds an empty session (its file is removed)
    return f"{RENEW_PATH}?ticket={ticket}"


def take_up_renewal(request: Request) -> str:
    """At RENEW_PATH, after SessionGuard gave the browser its new id: fill its storage, and say where to go."""
    renewal: Renewal | None = request.scope.get(_RENEWAL_SCOPE_KEY)
    if renewal is None:
        return "/login"
    app.storage.user.update(renewal.data)
    return renewal.then


def is_issued_id(value: object) -> bool:
    """Whether `value` has the shape of the ids NiceGUI issues: str(uuid.uuid4())."""
    if not isinstance(value, str):
        return False
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return parsed.version == 4 and str(parsed) == value


class SessionGuard:
    """Between Starlette's SessionMiddleware (which decodes the cookie) and NiceGUI's
    RequestTrackingMiddleware (which opens `storage-user-<id>.json`).

    An id NiceGUI would not have issued (a forged cookie: `../` segments and the like) is dropped
    and the browser starts a fresh session: nothing is read, written or deleted under that name,
    even if the storage secret leaked. At RENEW_PATH a valid ticket of `renewals` gives the session a new id."""

    def __init__(self, app_: ASGIApp, renewals: SessionRenewals):
        self.app = app_
        self.renewals = renewals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = scope.get("session")
        if session is not None:
            if "id" in session and not is_issued_id(session["id"]):
                session.clear()  # NiceGUI gives the request a fresh id; the cookie is rewritten
            elif scope["type"] == "http" and scope["path"] == RENEW_PATH:
                tickets = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("ticket", [])
                renewal = self.renewals.take(tickets[0], session.get("id")) if tickets else None
                if renewal is not None:
                    session["id"] = str(uuid.uuid4())
                    scope[_RENEWAL_SCOPE_KEY] = renewal
        await self.app(scope, receive, send)


class SecureSessionCookie:
    """Outside SessionMiddleware: marks its cookie `Secure` when the request came over HTTPS,
    directly or through a proxy uvicorn trusts (FORWARDED_ALLOW_IPS) that says so in
    X-Forwarded-Proto. SessionMiddleware itself sets HttpOnly and SameSite=Lax."""

    def __init__(self, app_: ASGIApp):
        self.app = app_

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (name, value + b"; secure")
                    if name.lower() == b"set-cookie"
                    and value.startswith(SESSION_COOKIE.encode() + b"=")
                    and b"; secure" not in value.lower()
                    else (name, value)
                    for name, value in message.get("headers", [])
                ]
            await send(message)

        await self.app(scope, receive, send_secure)


def media_link(system: System, path: str) -> str:
    """A studio link to a media path: signed when authentication is on."""
    return system.auth.sign(path) if system.auth.enabled else path

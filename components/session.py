"""The studio's signed-in user and its media links.

With authentication on, /login takes a token and keeps only its fingerprint in NiceGUI's
per-browser storage; each page resolves the user once and hands it to its components. Media
links in the studio are signed (as the API's are), since a browser sends no token with an
<img> or a download link.
"""

from __future__ import annotations

from nicegui import app

from backend.auth import User
from backend.system import System

SESSION_KEY = "token_fingerprint"


def studio_user(system: System) -> User | None:
    """The signed-in user (anyone is, with authentication off); None: send them to /login."""
    return system.auth.user_for_fingerprint(app.storage.user.get(SESSION_KEY))


def sign_in(system: System, token: str, client: str) -> User | None:
    """The token's user, kept for this browser; None for a wrong token. `client` (the browser's
    address) counts wrong tokens as the API does: TooManyWrongTokens once it sent too many."""
    user = system.auth.user_for(token.strip(), client)
    if user is not None:
        app.storage.user[SESSION_KEY] = system.auth.fingerprint(token.strip())
    return user


def sign_out() -> None:
    app.storage.user.pop(SESSION_KEY, None)


def media_link(system: System, path: str) -> str:
    """A studio link to a media path: signed when authentication is on."""
    return system.auth.sign(path) if system.auth.enabled else path

"""Who is asking, and signed media URLs.

Authentication is on when API_TOKEN or API_TOKENS is set. REST takes `Authorization: Bearer
<token>`, /ws a `token` query parameter (browsers cannot set WebSocket headers), the studio a
login. Tokens are compared in constant time and never logged. Wrong tokens are counted per
client address (an IPv6 client per /64), on all three: past PROMPTREEL_AUTH_FAILURES_PER_MINUTE the address is refused
(429 RATE_LIMITED) until its oldest failure is a minute old, whatever token it sends. With
authentication off every caller is the same local user (`User(None)`), who owns every job.

Media URLs carry `expires` and an HMAC `signature` of their path and expiry, so they work in
`<img>`/`<video>` without a header; a changed or expired signature is refused.

Signing in and out of the studio gives the browser a new session id through a one-time ticket
(`SessionRenewals`, kept by the Authenticator; components/session.py uses it).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from backend.errors import SignatureInvalid, TooManyWrongTokens
from backend.rate_limit import RateLimiter
from backend.settings import Settings

SECRET_KEY_FILE = "secret_key"
STORAGE_SECRET_FILE = "storage_secret"
#: Signed URLs expire on multiples of this many seconds (at most this much after their due time).
URL_EXPIRY_STEP = 600
#: Seconds a session renewal ticket works; the browser follows it at once.
RENEWAL_SECONDS = 60.0


@dataclass(frozen=True)
class User:
    """`name` owns the jobs this user makes; None when authentication is off."""

    name: str | None

    def may_see(self, owner: str | None) -> bool:
        return self.name is None or owner == self.name


LOCAL_USER = User(None)


def load_secret_key(settings: Settings) -> bytes:
    """PROMPTREEL_SECRET_KEY, or a random key made once and kept (mode 600) in the data dir."""
    return kept_secret(settings.secret_key, settings.data_dir / SECRET_KEY_FILE).encode()


def load_storage_secret(settings: Settings) -> str:
    """PROMPTREEL_STORAGE_SECRET (signs the studio's session cookie), or one made once and kept like the media key."""
    return kept_secret(settings.storage_secret, settings.data_dir / STORAGE_SECRET_FILE)


def kept_secret(configured: str | None, path: Path) -> str:
    """`configured`, or a random secret made once per installation and kept in `path` (mode 600)."""
    if configured:
        return configured
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: another process never reads it half-written.
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        draft.unlink(missing_ok=True)  # left by a process of the same id that died here
        with open(draft, "x", opener=lambda name, flags: os.open(name, flags, 0o600)) as file:  # readable by its owner only
            file.write(secrets.token_urlsafe(32))
        try:
            os.link(draft, path)
        except FileExistsError:  # another process of this installation made it first: theirs holds
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


def client_key(client: str) -> str:
    """What wrong tokens are counted by: the client's address, or for IPv6 its /64, since one host
    is commonly given a whole /64 and may send from any address in it."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client  # not an address ("unknown"): counted as it is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return client


@dataclass(frozen=True)
class Renewal:
    session_id: str  # the session it was made for: only that browser may take it up
    data: dict[str, Any]  # the new session's storage
    then: str  # where the browser goes next
    expires: float


class SessionRenewals:
    """One-time tickets, each giving one studio session a new id holding `data` (sign-in, sign-out)."""

    def __init__(self, seconds: float = RENEWAL_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self._tickets: dict[str, Renewal] = {}

    def issue(self, session_id: str, data: dict[str, Any], then: str) -> str:
        """A ticket for the session `session_id`, valid `seconds`; the expired ones are dropped."""
        now = self._clock()
        for ticket in [ticket for ticket, renewal in self._tickets.items() if renewal.expires < now]:
            del self._tickets[ticket]
        ticket = secrets.token_urlsafe(32)
        self._tickets[ticket] = Renewal(session_id, data, then, now + self.seconds)
        return ticket

    def take(self, ticket: str, session_id: object) -> Renewal | None:
        """The ticket's renewal, once, if it was issued to `session_id` and has not expired."""
        renewal = self._tickets.pop(ticket, None)
        if renewal is None or renewal.session_id != session_id or renewal.expires < self._clock():
            return None
        return renewal


class Authenticator:
    def __init__(self, settings: Settings):
        self._tokens = [(token.encode(), name) for token, name in settings.users.items()]
        self.enabled = bool(self._tokens)
        self.url_seconds = settings.media_url_seconds
        self._key = load_secret_key(settings)
        self._failures = RateLimiter(settings.auth_failures_per_minute)  # wrong tokens per client address
        #: The studio's sign-in and sign-out tickets (components/session.py).
        self.renewals = SessionRenewals()

    # -- tokens -------------------------------------------------------------------------------

    def user_for(self, token: str | None, client: str | None = None) -> User | None:
        """The user a token belongs to; None for a missing or unknown token (authentication on).

        `client`: the caller's address. Its wrong tokens are counted, and once it has sent too many
        within a minute every token it sends is refused with TooManyWrongTokens, the right one too
        (else a guess that hits would still tell itself apart)."""
        if not self.enabled:
            return LOCAL_USER
        client = client_key(client) if client is not None else None
        if client is not None and (retry_after := self._failures.retry_after(client)):
            raise TooManyWrongTokens(self._failures.per_minute, retry_after)
        if not token:
            return None  # no token is no guess: not counted
        given = token.encode()
        found = None
        for known, name in self._tokens:  # every token is compared, each in constant time
            if hmac.compare_digest(known, given):
                found = name
        if found is None and client is not None:
            self._failures.count(client)
        return User(found) if found is not None else None

    @staticmethod
    def fingerprint(token: str) -> str:
        """What the studio keeps of a token in its session: enough to recognise it, not to use it."""
        return hashlib.sha256(token.encode()).hexdigest()

    def user_for_fingerprint(self, fingerprint: str | None) -> User | None:
        """The user of a studio session; None once the token is gone from the settings."""
        if not self.enabled:
            return LOCAL_USER
        found = None
        for known, name in self._tokens:
            if fingerprint and hmac.compare_digest(self.fingerprint(known.decode()).encode(), fingerprint.encode()):
                found = name
        return User(found) if found is not None else None

    # -- signed media URLs --------------------------------------------------------------------

    def _signature(self, path: str, expires: int) -> str:
        return hmac.new(self._key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, path: str, now: float | None = None) -> str:
        """`path` with `expires` and `signature` query parameters."""
        # Rounded up to the next 10 minutes: a page that draws a link again gets the same URL (no reload).
        expires = math.ceil(((now or time.time()) + self.url_seconds) / URL_EXPIRY_STEP) * URL_EXPIRY_STEP
        return f"{path}?{urlencode({'expires': expires, 'signature': self._signature(path, expires)})}"

    def check(self, path: str, expires: str | None, signature: str | None, now: float | None = None) -> None:
        """Refuse a changed or expired signature (SignatureInvalid)."""
        # isascii: str.isdigit() also takes "²", which int() refuses (a 500 before).
        if not expires or not signature or not (expires.isascii() and expires.isdigit()):
            raise SignatureInvalid("it is incomplete")
        # As bytes: compare_digest raises TypeError on a str with non-ASCII characters (a 500 before).
        if not hmac.compare_digest(self._signature(path, int(expires)).encode(), signature.encode()):
            raise SignatureInvalid("its signature does not match")
        if int(expires) < (now or time.time()):
            raise SignatureInvalid("it has expired")

"""Which webhook URLs the server may POST to: http(s) on public addresses only (unless
PROMPTREEL_WEBHOOK_ALLOW_PRIVATE), checked after DNS resolution when the job is created and again
before every attempt, and sent to the address checked (the provider output rules' resolver,
address check and pinning: backend/providers/output_urls.py)."""

from __future__ import annotations

import httpx

from backend.errors import ApiError
from backend.providers.output_urls import OutputUrlPolicy, PinnedRequest, is_public, resolve


class WebhookUrlRefused(ApiError):
    status_code = 422
    code = "WEBHOOK_URL_REFUSED"

    def __init__(self, reason: str):
        super().__init__(f"webhook: {reason}", {"field": "webhook"})


async def pin_webhook(text: str, *, allow_private: bool) -> list[PinnedRequest]:
    """The requests that reach `text`, one per allowed address; WebhookUrlRefused when none is."""
    try:
        url = httpx.URL(text)
        host = url.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError) as error:
        raise WebhookUrlRefused("not a valid URL") from error
    if url.scheme not in ("http", "https") or not host:
        raise WebhookUrlRefused("must be an http:// or https:// URL")
    try:
        addresses = await resolve(host, url.port or (443 if url.scheme == "https" else 80))
    except OSError as error:  # socket.gaierror included
        raise WebhookUrlRefused("its host name does not resolve") from error
    # One private answer is enough to refuse: a name that resolves to both is a rebinding trick.
    if not addresses or not (allow_private or all(is_public(address) for address in addresses)):
        raise WebhookUrlRefused("resolves to a loopback, private, link-local or metadata address")
    return [OutputUrlPolicy.pinned(url, address) for address in addresses]

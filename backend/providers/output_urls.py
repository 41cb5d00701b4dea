"""Which provider output URLs the server may fetch, and connecting only to the address checked.

A provider's answer names the URL of its output, and the server fetches it: a hostile or
compromised provider (or a gateway in between) could name an internal address and have the server
fetch it for them (SSRF). So an output URL, and every redirect it leads to, must be:

- `https` and resolve to public (`is_global`) addresses, checked after DNS resolution (an IPv6
  address that carries an IPv4 one, 6to4, NAT64, IPv4-compatible or -translated, is checked for
  that one too; local-use NAT64 is not public); or
- on the provider's own server: the same scheme, port and address as its API base URL (the fakes,
  and self-hosted gateways, serve outputs there). Only that one endpoint: a base URL on
  127.0.0.1:8102 does not open 127.0.0.1:8791 or 127.0.0.2, because the provider's own server is
  already trusted with the key and everything it answers, while another service on a private
  address is exactly what must stay out of reach;
- or anything, plain http included, with PROMPTREEL_ALLOW_PRIVATE_OUTPUT_URLS.

The host is resolved once, checked, and the request is sent to a checked address (the URL's
host replaced by the IP, with the original Host header and TLS server name kept), so a DNS answer
that changes between the check and the connection (DNS rebinding) cannot take it elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import httpx

from backend.providers.base import ProviderError
from backend.providers.retry import Transient

#: Redirects followed at most for one output (each hop is checked like the first URL).
MAX_REDIRECTS = 5

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class PinnedRequest:
    """What to send to fetch one URL: the URL with the checked IP as host, and what keeps the
    original name for the server (Host header) and for TLS (SNI, certificate check)."""

    url: httpx.URL
    headers: dict[str, str]
    extensions: dict[str, object]


def _address(text: str) -> IPAddress:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


#: IPv6 ranges whose last 32 bits are an IPv4 address a translator or tunnel may reach: NAT64's
#: well-known prefix, IPv4-compatible and IPv4-translated (SIIT) addresses.
_CARRY_IPV4 = tuple(ipaddress.ip_network(prefix) for prefix in ("64:ff9b::/96", "::/96", "::ffff:0:0:0/96"))
#: Local-use NAT64 (RFC 8215): not globally reachable, though Python's `is_global` says it is.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


def is_public(address: IPAddress) -> bool:
    """Whether an address is globally reachable, and so is any IPv4 address it carries (6to4,
    NAT64, IPv4-compatible or -translated): those reach the IPv4 address through a gateway."""
    if not address.is_global:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64:
            return False
        carries = any(address in prefix for prefix in _CARRY_IPV4)
        carried = address.sixtofour or (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if carries else None)
        if carried is not None and not carried.is_global:
            return False
    return True


def _effective_port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses a host name resolves to, in the resolver's order (an IP literal: itself)."""
    loop = asyncio.get_running_loop()
    answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for *_, sockaddr in answers:
        address = _address(str(sockaddr[0]))
        if address not in addresses:
            addresses.append(address)
    return addresses


class OutputUrlPolicy:
    """The output URL rules of one provider (see the module's docstring)."""

    def __init__(self, base_url: str, *, provider: str, label: str, allow_private: bool = False):
        self.base = httpx.URL(base_url)
        self.provider = provider
        self.label = label
        self.allow_private = allow_private

    def _refused(self, what: str, redirected: bool) -> ProviderError:
        where = "redirects to" if redirected else "points at"
        # No URL, address or answer in the message: it is shown to the user.
        return ProviderError(self.provider, f"{self.label}'s output URL {where} {what}; refused", code="PROVIDER_OUTPUT_REFUSED")

    def parse(self, text: str) -> httpx.URL:
        """The provider's output URL, refused like any other when it does not parse as one."""
        try:
            url = httpx.URL(text)
            url.host  # noqa: B018 -- decoded on first use: a host name IDNA refuses fails here, not later
            return url
        except (httpx.InvalidURL, UnicodeError) as error:  # UnicodeError: a host name IDNA refuses
            raise self._refused("an address that is not a valid URL", False) from error

    def redirect_target(self, url: httpx.URL, location: str) -> httpx.URL:
        """Where a redirect's Location leads from `url`; refused when it is not a valid URL. An
        absolute one without a host is not (`http:` and a host after backslashes, which browsers
        read as that host): httpx would put the current host in, or fail with its own error."""
        try:
            target = httpx.URL(location)
            if target.scheme and not target.host:
                raise httpx.InvalidURL("an absolute URL without a host")
            joined = url.join(target)
            joined.host  # noqa: B018 -- decoded on first use (see parse)
            return joined
        except (httpx.InvalidURL, UnicodeError) as error:
            raise self._refused("an address that is not a valid URL", True) from error

    async def pin(self, url: httpx.URL, *, redirected: bool = False) -> list[PinnedRequest]:
        """The requests that fetch `url`, one per address the rules allow, to be tried in turn
        (a host may resolve to an IPv6 and an IPv4 address of which only one answers); a
        ProviderError if no address is allowed."""
        if url.scheme not in ("http", "https") or not url.host:
            raise self._refused("something other than an https URL", redirected)
        port = _effective_port(url)
        try:
            addresses = await resolve(url.raw_host.decode("ascii"), port)
        except (UnicodeError, OSError) as error:  # socket.gaierror included: worth another try, like a connect failure
            raise Transient("could not resolve the output's host name") from error
        if self.allow_private:
            allowed = addresses
        else:
            allowed = [address for address in addresses if is_public(address)] if url.scheme == "https" else []
            if not allowed and self._on_provider_endpoint(url):
                base_addresses = await self._base_addresses()
                allowed = [address for address in addresses if address in base_addresses]
        if not allowed:
            if url.scheme != "https" and all(is_public(address) for address in addresses):
                raise self._refused("a plain http URL", redirected)
            raise self._refused("a private address", redirected)
        return [self.pinned(url, address) for address in allowed]

    def _on_provider_endpoint(self, url: httpx.URL) -> bool:
        return url.scheme == self.base.scheme and _effective_port(url) == _effective_port(self.base)

    async def _base_addresses(self) -> list[IPAddress]:
        try:
            return await resolve(self.base.raw_host.decode("ascii"), _effective_port(self.base))
        except (UnicodeError, OSError):
            return []

    @staticmethod
    def pinned(url: httpx.URL, address: IPAddress) -> PinnedRequest:
        """The request for `url` sent to `address` (the webhooks pin their URLs the same way)."""
        name = url.raw_host.decode("ascii")
        extensions: dict[str, object] = {"sni_hostname": name} if url.scheme == "https" else {}
        return PinnedRequest(url.copy_with(host=str(address)), {"Host": url.netloc.decode("ascii")}, extensions)

"""What the remote providers share once the work is done: fetching outputs and checking them.

Provider outputs live at short-lived URLs (OpenAI's expire within the hour, Replicate deletes
outputs after an hour, Runway's links expire within a day or two), so they are fetched as soon as
they are known, and checked to be what they claim before anything is stored. A provider's answer
is not trusted: outputs are streamed to a file under the size limit of their kind, only from the
URLs output_urls.py allows, and images are checked by their header before they are decoded.
"""

from __future__ import annotations

import io
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import IO, Any, Literal

import httpx
from PIL import Image

from ..media_checks import MediaLimits, MediaRejected, NotAnImage, megabytes, open_image
from .base import ProviderError, StepContext
from .output_urls import MAX_REDIRECTS, OutputUrlPolicy, PinnedRequest
from .retry import (
    NOT_SENT_ERRORS,
    RETRYABLE_STATUS,
    RetryPolicy,
    Transient,
    describe_transport_error,
    parse_retry_after,
    status_reason,
    with_retries,
)

#: Answers that mean the output is gone: expired links (403/401 from signed CDN URLs), deleted files.
GONE_STATUS = frozenset({401, 403, 404, 410})
#: Downloads use no pooled connections: each request goes to the address its own URL was checked
#: for, with its own TLS server name (see output_urls.py).
NO_KEEPALIVE = httpx.Limits(max_keepalive_connections=0)


@cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every provider client: building one loads the CA bundle, about 40 ms
    of CPU on the event loop, which each new client used to pay (bench_workers' profile)."""
    return httpx.create_ssl_context()


def http_client(**options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=tls_context(), **options)


@asynccontextmanager
async def open_pinned(client: httpx.AsyncClient, candidates: list[PinnedRequest], headers: dict[str, str]) -> AsyncIterator[httpx.Response]:
    """The streamed answer of the first checked address that takes the connection."""
    for index, pinned in enumerate(candidates):
        request = client.build_request("GET", pinned.url, headers={**headers, **pinned.headers}, extensions=pinned.extensions)
        try:
            response = await client.send(request, stream=True)
        except httpx.ConnectError:
            if index == len(candidates) - 1:
                raise
            continue
        try:
            yield response
        finally:
            await response.aclose()
        return


async def download(
    url: str,
    dest: Path,
    *,
    kind: Literal["image", "video"],
    limits: MediaLimits,
    urls: OutputUrlPolicy,
    ctx: StepContext | None,
    provider: str,
    label: str,
    policy: RetryPolicy,
    timeout: httpx.Timeout | float,
    headers: dict[str, str] | None = None,
) -> None:
    """Stream an output (an image or a video) to the file `dest`, retried on transient failures,
    never more than the limit of its kind. Every URL, redirects included (at most MAX_REDIRECTS),
    must pass `urls`; `headers` (the provider's key) go only to the provider's own origin. A gone
    output fails the step with a plain reason."""
    max_bytes = limits.image_bytes if kind == "image" else limits.video_bytes
    too_large = f"{label}'s output is larger than the {megabytes(max_bytes)} allowed (PROMPTREEL_MAX_{kind.upper()}_BYTES)"

    async def fetch(client: httpx.AsyncClient) -> None:
        current, keyed = httpx.URL(url), headers is not None
        for hop in range(MAX_REDIRECTS + 1):
            candidates = await urls.pin(current, redirected=hop > 0)
            keyed = keyed and same_origin(str(current), str(urls.base))
            # identity: a compressed answer would be counted only as it is inflated
            sent = {**(headers if keyed and headers else {}), "Accept-Encoding": "identity"}
            async with open_pinned(client, candidates, sent) as response:
                if response.is_redirect:
                    try:
                        current = current.join(response.headers["location"])
                    except (httpx.InvalidURL, UnicodeError) as error:
                        raise ProviderError(provider, f"{label}'s output URL redirects to an invalid URL") from error
                    continue
                if response.status_code in RETRYABLE_STATUS:
                    raise Transient(status_reason(response), retry_after=parse_retry_after(response.headers))
                if response.status_code in GONE_STATUS:
                    raise ProviderError(
                        provider,
                        f"{label}'s output is no longer available ({response.status_code}): its download link has expired "
                        "or the file was deleted",
                        code="PROVIDER_OUTPUT_GONE",
                    )
                if not response.is_success:
                    raise ProviderError(provider, f"{label}'s output could not be downloaded ({status_reason(response)})")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:  # refused before a byte is read
                    raise ProviderError(provider, too_large, code="PROVIDER_OUTPUT_TOO_LARGE")
                size = 0
                with dest.open("wb") as sink:
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise ProviderError(provider, too_large, code="PROVIDER_OUTPUT_TOO_LARGE")
                        sink.write(chunk)
                return
        raise ProviderError(provider, f"{label}'s output URL redirects more than {MAX_REDIRECTS} times; refused", code="PROVIDER_OUTPUT_REFUSED")

    async def attempt() -> None:
        try:
            async with http_client(timeout=timeout, limits=NO_KEEPALIVE) as client:
                await fetch(client)
        except NOT_SENT_ERRORS as error:
            raise Transient(describe_transport_error(error)) from error
        except httpx.TransportError as error:  # a download is a read: safe to repeat
            raise Transient(describe_transport_error(error)) from error

    try:
        await with_retries(attempt, ctx=ctx, provider=provider, label=label, what=f"downloading the {kind}", policy=policy)
    except BaseException:
        dest.unlink(missing_ok=True)  # a refused or broken download leaves nothing behind
        raise


def as_png(source: Path | IO[bytes], limits: MediaLimits, *, provider: str, label: str) -> tuple[bytes, tuple[int, int]]:
    """The output as PNG bytes and its size. Refuses anything too large (in bytes, or in pixels
    from its header, before decoding) and anything that does not decode as an image."""
    try:
        with open_image(source, limits, whose=f"{label}'s image") as image:
            size = image.size
            image.load()  # decodes the whole image: proves it is one, at a bounded cost
            if image.format == "PNG":
                if isinstance(source, Path):
                    return source.read_bytes(), size
                source.seek(0)
                return source.read(), size
            converted = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    except NotAnImage as error:
        raise ProviderError(provider, f"{label}'s output is not an image that decodes") from error
    except MediaRejected as error:
        raise ProviderError(provider, str(error), code="PROVIDER_OUTPUT_TOO_LARGE") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ProviderError(provider, f"{label}'s output is not an image that decodes") from error
    buffer = io.BytesIO()
    converted.save(buffer, format="PNG")
    return buffer.getvalue(), size


def same_origin(url: str, base_url: str) -> bool:
    """Whether an output URL is on the API's own host (only then does it get the API key)."""
    a, b = httpx.URL(url), httpx.URL(base_url)
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)

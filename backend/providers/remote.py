"""What the remote providers share once the work is done: fetching outputs and checking them.

Provider outputs live at short-lived URLs (OpenAI's expire within the hour, Replicate deletes
outputs after an hour, Runway's links expire within a day or two), so they are fetched as soon as
they are known, and checked to be what they claim before anything is stored.
"""

from __future__ import annotations

import io
import ssl
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, UnidentifiedImageError

from .base import ProviderError, StepContext
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

#: An output larger than this is refused (bytes): no provider here makes anything near it.
MAX_OUTPUT_BYTES = 512 * 1024 * 1024
#: Answers that mean the output is gone: expired links (403/401 from signed CDN URLs), deleted files.
GONE_STATUS = frozenset({401, 403, 404, 410})


@cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every provider client: building one loads the CA bundle, about 40 ms
    of CPU on the event loop, which each new client used to pay (bench_workers' profile)."""
    return httpx.create_ssl_context()


def http_client(**options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=tls_context(), **options)


async def download(
    client: httpx.AsyncClient,
    url: str,
    *,
    ctx: StepContext | None,
    provider: str,
    label: str,
    policy: RetryPolicy,
    what: str,
    dest: Path | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """GET an output, retried on transient failures. With `dest`, streams it to that file and
    returns b""; without, returns the bytes. A gone output fails the step with a plain reason."""

    async def attempt() -> bytes:
        buffer = bytearray()
        try:
            async with client.stream("GET", url, headers=headers, follow_redirects=True) as response:
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
                size = 0
                sink = dest.open("wb") if dest is not None else None
                try:
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_OUTPUT_BYTES:
                            raise ProviderError(provider, f"{label}'s output is larger than {MAX_OUTPUT_BYTES // 2**20} MB")
                        if sink is not None:
                            sink.write(chunk)
                        else:
                            buffer.extend(chunk)
                finally:
                    if sink is not None:
                        sink.close()
        except NOT_SENT_ERRORS as error:
            raise Transient(describe_transport_error(error)) from error
        except httpx.TransportError as error:  # a download is a read: safe to repeat
            raise Transient(describe_transport_error(error)) from error
        return bytes(buffer)

    return await with_retries(attempt, ctx=ctx, provider=provider, label=label, what=f"downloading {what}", policy=policy)


def as_png(data: bytes, *, provider: str, label: str) -> tuple[bytes, tuple[int, int]]:
    """The output as PNG bytes and its size; refuses anything that does not decode as an image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            size = image.size
            if image.format == "PNG":
                return data, size
            converted = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ProviderError(provider, f"{label}'s output is not an image ({len(data)} bytes that do not decode)") from error
    buffer = io.BytesIO()
    converted.save(buffer, format="PNG")
    return buffer.getvalue(), size


def same_origin(url: str, base_url: str) -> bool:
    """Whether an output URL is on the API's own host (only then does it get the API key)."""
    a, b = httpx.URL(url), httpx.URL(base_url)
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)

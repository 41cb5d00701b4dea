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
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import IO, Any, Literal

import httpx
from PIL import Image

from backend.media.checks import MediaLimits, MediaRejected, NotAnImage, megabytes, open_image
from backend.providers.base import ProviderError, StepContext
from backend.providers.output_urls import MAX_REDIRECTS, OutputUrlPolicy, PinnedRequest
from backend.providers.retry import (
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
#: The most a provider's API answer read whole may weigh (a task, a poll, an account: JSON of a
#: few kB). Outputs and DALL-E's answer (an image as base64) are streamed under their own caps.
API_ANSWER_BYTES = 4 * 2**20


@cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every provider client: building one loads the CA bundle, about 40 ms
    of CPU on the event loop, which each new client used to pay (bench/workers.py's profile)."""
    return httpx.create_ssl_context()


class ProviderAnswers:
    """What every provider client takes from the wire (as its event hooks): uncompressed answers,
    read whole at most `max_bytes` (None: the caller streams them under its own cap).

    Compression is not asked for, and an answer compressed anyway is refused: httpx inflates each
    chunk it reads whole, so a 2 kB answer marked `Content-Encoding: gzip, gzip` became 2 GB of
    memory in one chunk, past any cap counted on what it yields. Hooks rather than a transport:
    the clients keep their own transports (and proxies from the environment)."""

    def __init__(self, provider: str, label: str, max_bytes: int | None):
        self.provider, self.label, self.max_bytes = provider, label, max_bytes

    def hooks(self) -> dict[str, list[Callable[..., Any]]]:
        """`event_hooks` for an AsyncClient (httpx's or the OpenAI client's httpx2)."""

        async def on_request(request: httpx.Request) -> None:
            request.headers["Accept-Encoding"] = "identity"

        async def on_response(response: httpx.Response) -> None:
            self._check(response)
            if self.max_bytes is not None:
                response.stream = _CappedAsyncStream(response.stream, self)  # type: ignore[arg-type]

        return {"request": [on_request], "response": [on_response]}

    def sync_hooks(self) -> dict[str, list[Callable[..., Any]]]:
        """The same for a blocking Client (the key checks)."""

        def on_request(request: httpx.Request) -> None:
            request.headers["Accept-Encoding"] = "identity"

        def on_response(response: httpx.Response) -> None:
            self._check(response)
            if self.max_bytes is not None:
                response.stream = _CappedSyncStream(response.stream, self)  # type: ignore[arg-type]

        return {"request": [on_request], "response": [on_response]}

    def _check(self, response: httpx.Response) -> None:
        if response.headers.get("content-encoding", "identity").strip().lower() not in ("identity", ""):
            raise ProviderError(
                self.provider,
                f"{self.label} answered compressed, which was not asked for; refused",
                code="PROVIDER_ANSWER_REFUSED",
            )

    def too_large(self) -> ProviderError:
        return ProviderError(
            self.provider,
            f"{self.label}'s answer is larger than the {megabytes(self.max_bytes or 0)} allowed; refused",
            code="PROVIDER_ANSWER_TOO_LARGE",
        )


class _CappedAsyncStream(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, rules: ProviderAnswers):
        self._stream, self._rules = stream, rules

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._stream:
            size += len(chunk)
            if size > (self._rules.max_bytes or 0):
                raise self._rules.too_large()
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


class _CappedSyncStream(httpx.SyncByteStream):
    def __init__(self, stream: httpx.SyncByteStream, rules: ProviderAnswers):
        self._stream, self._rules = stream, rules

    def __iter__(self) -> Iterator[bytes]:
        size = 0
        for chunk in self._stream:
            size += len(chunk)
            if size > (self._rules.max_bytes or 0):
                raise self._rules.too_large()
            yield chunk

    def close(self) -> None:
        self._stream.close()


def http_client(*, provider: str, label: str, max_bytes: int | None = API_ANSWER_BYTES, **options: Any) -> httpx.AsyncClient:
    """A client for one provider's answers (ProviderAnswers: uncompressed, at most `max_bytes` when read whole)."""
    return httpx.AsyncClient(verify=tls_context(), event_hooks=ProviderAnswers(provider, label, max_bytes).hooks(), **options)


def key_check_get(url: str, *, provider: str, label: str, headers: dict[str, str], timeout: float) -> httpx.Response:
    """A key check's GET, under the same rules as every other provider answer."""
    hooks = ProviderAnswers(provider, label, API_ANSWER_BYTES).sync_hooks()
    with httpx.Client(verify=tls_context(), event_hooks=hooks, timeout=timeout) as client:
        return client.get(url, headers=headers)


@asynccontextmanager
async def open_pinned(
    client: httpx.AsyncClient, candidates: list[PinnedRequest], headers: dict[str, str]
) -> AsyncIterator[httpx.Response]:
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

    async def refuse_an_invalid_location(response: httpx.Response) -> None:
        # httpx reads a redirect's Location even when it does not follow it, and fails on an invalid
        # one with its own error: checked here first, as the redirect the step refuses.
        if response.has_redirect_location:
            urls.redirect_target(response.request.url, response.headers["location"])

    async def fetch(client: httpx.AsyncClient) -> None:
        current, keyed = urls.parse(url), headers is not None
        for hop in range(MAX_REDIRECTS + 1):
            candidates = await urls.pin(current, redirected=hop > 0)
            keyed = keyed and same_origin(str(current), str(urls.base))
            sent = headers if keyed and headers else {}  # uncompressed: the client's request hook asks for that
            async with open_pinned(client, candidates, sent) as response:
                if response.is_redirect:
                    current = urls.redirect_target(current, response.headers["location"])
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
        raise ProviderError(
            provider, f"{label}'s output URL redirects more than {MAX_REDIRECTS} times; refused", code="PROVIDER_OUTPUT_REFUSED"
        )

    async def attempt() -> None:
        try:
            async with http_client(
                provider=provider, label=label, max_bytes=None, timeout=timeout, limits=NO_KEEPALIVE
            ) as client:
                client.event_hooks = {
                    **client.event_hooks,
                    "response": [*client.event_hooks["response"], refuse_an_invalid_location],
                }
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

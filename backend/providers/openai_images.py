"""`openai` (the guide's `dalle3`): OpenAI's image models through the official `openai` client.

The model comes from the job (`settings.imageModel`), else the catalog's default OpenAI image
model (`gpt-image-2`); its catalog entry maps the job's size and quality onto OpenAI's. GPT image
models answer base64 PNG with the token `usage` the image cost, which is kept and priced. An
answer that the model does not exist (404 `model_not_found`: OpenAI shut `dall-e-3` down on
2026-05-12) is explained as that, and the model is marked unavailable.

An image generation is one synchronous call: there is no remote task to save, poll or
cancel, nor to take up again after a restart. A step interrupted by a stop or a crash therefore
fails on resume instead of asking again, as the first call may already have been billed. The call
starts paid work, so it is repeated only after failures that prove OpenAI made no image (see
`retry.py`): a 429 rate limit (after its Retry-After), a 5xx (OpenAI does not bill a request that
failed), or a connection that could not be made. A read timeout or a dropped connection after the
request was sent is not repeated: the image may have been made and billed.
The client's own retries are off (`max_retries=0`) so that every attempt is ours and is logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pydantic

from backend.media.checks import MediaLimits, megabytes
from backend.providers.base import ImageRequest, ImageResult, ProviderError, StepContext
from backend.providers.catalog import ModelEntry, active
from backend.providers.output_urls import OutputUrlPolicy
from backend.providers.remote import ProviderAnswers, as_png, download, key_check_get, tls_context
from backend.providers.retry import (
    NOT_SENT_ERRORS,
    OutcomeUnknown,
    RetryPolicy,
    Transient,
    describe_transport_error,
    parse_retry_after,
    with_retries,
)
from backend.settings import Settings

LABEL = "OpenAI"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: GPT image models take up to about two minutes at high quality; a call with no answer after this long is given up.
DEFAULT_TIMEOUT = httpx.Timeout(180.0, connect=10.0)
#: Billing problems: no retry helps until someone pays.
BILLING_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"}
_NOT_SENT_NAMES = {kind.__name__ for kind in NOT_SENT_ERRORS}


def model_missing_message(model: str, detail: str) -> str:
    """Why a job failed on a model OpenAI does not serve, and the way out (never the base URL)."""
    entry = active().get(model)
    replacement = entry.replacement if entry is not None and entry.replacement else None
    if replacement is None:
        default = active().default("openai", "image")
        replacement = default.id if default is not None and default.id != model else None
    way_out = f"choose {replacement}, or update the model catalog" if replacement else "update the model catalog"
    return f"OpenAI has no model '{model}' for this key ({detail}): it may have been shut down; {way_out}"


class OpenAIImageProvider:
    name = "openai"

    def __init__(
        self,
        settings: Settings,
        *,
        policy: RetryPolicy | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        on_key_rejected: Callable[[str], None] | None = None,
        on_model_missing: Callable[[str, str], None] | None = None,
    ):
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self.on_key_rejected = on_key_rejected
        #: Called with (model, reason) when OpenAI answers that a model does not exist.
        self.on_model_missing = on_model_missing
        self.limits = MediaLimits.from_settings(settings)

    @property
    def base_url(self) -> str:
        return (self.settings.openai_base_url or DEFAULT_BASE_URL).rstrip("/")

    @property
    def default_model(self) -> str:
        default = active().default("openai", "image")
        return default.id if default is not None else "gpt-image-2"

    def model_for(self, quality: str) -> str:
        return self.default_model

    def _entry(self, model: str) -> ModelEntry:
        entry = active().get(model)
        if entry is None or entry.provider != "openai" or entry.kind != "image":
            raise ProviderError(self.name, f"'{model}' is not an OpenAI image model of the catalog", code="MODEL_UNKNOWN")
        return entry

    def _client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self.settings.openai_api_key,
            base_url=self.base_url,
            max_retries=0,
            timeout=self.timeout,  # type: ignore[arg-type]  # typed as httpx2's Timeout; openai converts an httpx one
            # max_bytes None: generate() streams the answer under its own cap
            http_client=openai.DefaultAsyncHttpxClient(
                verify=tls_context(), event_hooks=ProviderAnswers(self.name, "OpenAI", None).hooks()
            ),
        )

    async def generate(self, request: ImageRequest, ctx: StepContext) -> ImageResult:
        if ctx.resumed:  # no id to look the interrupted call up by: sending it again could pay twice
            raise ProviderError(
                self.name,
                "OpenAI's image request was interrupted by a restart; it may already have been charged, so it was not "
                "sent again. Run the job again to make a new image.",
                code="PROVIDER_INTERRUPTED",
            )
        model = request.model or self.default_model
        entry = self._entry(model)
        job_size = f"{request.width}x{request.height}"
        size = entry.sizes.get(job_size, job_size)
        quality = entry.provider_quality(request.quality)
        # GPT image models always answer base64 and refuse `response_format`; DALL-E takes it.
        legacy = model.startswith("dall-e")
        options: dict[str, str] = {"response_format": "b64_json"} if legacy else {"output_format": "png"}
        ctx.log(f"asking OpenAI {model} for a {size} image at quality '{quality}' (OpenAI's image models take no seed)")
        ctx.progress(0.05)

        # base64 takes 4 bytes for 3, plus the JSON around it
        answer_limit = self.limits.image_bytes * 4 // 3 + 2**20
        async with self._client() as client:

            async def attempt() -> openai.types.ImagesResponse:
                try:
                    # Streamed and capped: the answer carries the image as base64, and a hostile
                    # endpoint could make it any size (the client's own read keeps it all).
                    # The SDK types quality and the format keys as Literals; ours come from the catalog.
                    async with client.images.with_streaming_response.generate(  # type: ignore[call-overload]
                        model=model,
                        prompt=request.prompt,
                        size=size,
                        quality=quality,
                        n=1,
                        **options,
                    ) as answer:
                        body = bytearray()
                        try:
                            async for chunk in answer.iter_bytes():
                                body += chunk
                                if len(body) > answer_limit:
                                    raise ProviderError(
                                        self.name,
                                        f"OpenAI's answer is larger than the {megabytes(answer_limit)} an image of at most "
                                        f"{megabytes(self.limits.image_bytes)} takes (PROMPTREEL_MAX_IMAGE_BYTES)",
                                        code="PROVIDER_OUTPUT_TOO_LARGE",
                                    )
                        except httpx.TransportError as error:  # the image was made (and billed): do not ask again
                            raise OutcomeUnknown(describe_transport_error(error)) from error
                    try:
                        parsed = json.loads(body)
                    except ValueError as error:
                        raise ProviderError(self.name, "OpenAI's answer is not JSON") from error
                    if not isinstance(parsed, dict):
                        raise ProviderError(self.name, "OpenAI's answer is not an image response")
                    return openai.types.ImagesResponse.construct(**parsed)  # as loosely as the client's own parse
                except openai.APIStatusError as error:
                    raise self._explain_status(error, model) from error
                except openai.APIConnectionError as error:  # APITimeoutError included
                    cause = error.__cause__
                    if isinstance(cause, ProviderError):  # its response hook refused the answer (remote.ProviderAnswers)
                        raise cause from None
                    reason = f"{error.message} ({type(cause).__name__})" if cause else error.message
                    if cause is not None and type(cause).__name__ in _NOT_SENT_NAMES:
                        raise Transient(reason) from error
                    raise OutcomeUnknown(reason) from error

            try:
                response = await with_retries(
                    attempt, ctx=ctx, provider=self.name, label=LABEL, what="generating the image", policy=self.policy
                )
            except OutcomeUnknown as error:
                raise ProviderError(
                    self.name,
                    f"OpenAI did not answer the image request: {error.reason}. The image may have been made and "
                    "billed, so it was not requested again; try the job again if no image arrives.",
                    transient=True,
                ) from error

        if not response.data:
            raise ProviderError(self.name, "OpenAI answered without an image")
        image = response.data[0]
        ctx.progress(0.8, "OpenAI answered with the image")
        if image.b64_json:
            try:
                data = base64.b64decode(image.b64_json, validate=True)
            except (binascii.Error, ValueError) as error:
                raise ProviderError(self.name, "OpenAI's image data is not valid base64") from error
            png, (width, height) = await asyncio.to_thread(as_png, io.BytesIO(data), self.limits, provider=self.name, label=LABEL)
        elif image.url:  # the URL expires within the hour: fetch it now
            with tempfile.TemporaryDirectory(prefix="promptreel-openai-") as folder:
                output = Path(folder) / "output"
                urls = OutputUrlPolicy(
                    self.base_url, provider=self.name, label=LABEL, allow_private=self.settings.allow_private_output_urls
                )
                await download(
                    image.url,
                    output,
                    kind="image",
                    limits=self.limits,
                    urls=urls,
                    ctx=ctx,
                    provider=self.name,
                    label=LABEL,
                    policy=self.policy,
                    timeout=httpx.Timeout(60.0, connect=10.0),
                )
                png, (width, height) = await asyncio.to_thread(as_png, output, self.limits, provider=self.name, label=LABEL)
        else:
            raise ProviderError(self.name, "OpenAI answered with neither image data nor an image URL")
        if f"{width}x{height}" != size:
            ctx.log(f"OpenAI made a {width}x{height} image instead of {size}")
        metadata: dict[str, object] = {"revisedPrompt": image.revised_prompt} if image.revised_prompt else {}
        usage = response.usage.model_dump() if isinstance(response.usage, pydantic.BaseModel) else response.usage
        if isinstance(usage, dict):
            metadata["imageUsage"] = usage
            ctx.log(f"OpenAI reports {usage.get('input_tokens')} input and {usage.get('output_tokens')} output tokens")
        return ImageResult(png=png, model=model, metadata=metadata, usage=usage if isinstance(usage, dict) else None)

    def _explain_status(self, error: openai.APIStatusError, model: str) -> Exception:
        """The error an OpenAI answer means: Transient when worth another try, else a ProviderError."""
        status = error.status_code
        body = error.body if isinstance(error.body, dict) else {}
        code = str(body.get("code") or "") or (error.code or "")
        kind = str(body.get("type") or "")
        detail = str(body.get("message") or error.message)
        if status == 401:
            reason = "OpenAI rejected the API key (401)"
            if self.on_key_rejected:
                self.on_key_rejected(reason)
            return ProviderError(self.name, f"{reason}: check OPENAI_API_KEY", code="PROVIDER_AUTH")
        if code in BILLING_CODES or kind in BILLING_CODES:
            return ProviderError(
                self.name,
                f"OpenAI refused to bill this account ({code or kind}): check the plan and billing",
                code="PROVIDER_BILLING",
            )
        if status == 400 and code == "content_policy_violation":
            return ProviderError(self.name, "OpenAI refused the prompt under its content policy", code="PROVIDER_CONTENT_POLICY")
        if status == 429:
            return Transient(f"429 rate limited ({detail})", retry_after=parse_retry_after(error.response.headers))
        if status >= 500:
            return Transient(f"{status} server error", retry_after=parse_retry_after(error.response.headers))
        if code == "model_not_found" or (status == 404 and "model" in detail.lower()):
            reason = f"OpenAI answered that the model does not exist ({status} {code or 'not found'}: {detail})"
            if self.on_model_missing:
                self.on_model_missing(model, reason)
            return ProviderError(
                self.name, model_missing_message(model, f"{status} {code or 'not found'}: {detail}"), code="MODEL_NOT_FOUND"
            )
        if status == 403:
            return ProviderError(
                self.name, f"OpenAI refused access to {model} for this key (403): {detail}", code="PROVIDER_AUTH"
            )
        if status == 404:
            return ProviderError(self.name, f"OpenAI answered 404 for the image endpoint ({detail}): check OPENAI_BASE_URL")
        return ProviderError(self.name, f"OpenAI refused the image request ({status}): {detail}")

    async def cancel_remote(self, remote_id: str) -> None:
        """Nothing to cancel: OpenAI's image call is synchronous and leaves no remote task."""

    def _get_model(self, model: str, timeout: float) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.settings.openai_api_key}"}
        return key_check_get(f"{self.base_url}/models/{model}", provider=self.name, label=LABEL, headers=headers, timeout=timeout)

    def check_key(self, timeout: float = 5.0) -> tuple[bool | None, str | None]:
        """Whether OpenAI accepts the key, asked of `GET /models/{default model}` (free): (ok, reason).
        A 404 there says the key works and the model is missing: that model is marked, not the key."""
        model = self.default_model
        response = self._get_model(model, timeout)
        if response.status_code == 401:
            return False, "OpenAI rejected the API key (401)"
        if response.status_code == 404:
            if self.on_model_missing:
                self.on_model_missing(model, f"OpenAI answered that the model does not exist (404: {_error_text(response)})")
            return True, None
        if response.is_success or response.status_code == 403:  # 403: this model only; the key itself works
            return True, None
        return None, f"OpenAI answered {response.status_code}"

    def check_model(self, model: str, timeout: float = 5.0) -> tuple[bool | None, str | None]:
        """Whether OpenAI serves `model` to this key, from `GET /models/{model}` (free)."""
        response = self._get_model(model, timeout)
        if response.status_code == 404:
            return False, f"OpenAI answered that the model does not exist (404: {_error_text(response)})"
        if response.status_code == 403:
            return False, f"this OpenAI key has no access to {model} (403)"
        if response.is_success:
            return True, None
        return None, f"OpenAI answered {response.status_code}"


def _error_text(response: httpx.Response) -> str:
    """OpenAI's error message from `{"error": {"message", "code"}}`, else the status line."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or str(response.status_code)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error.get("code") or "error") + ": " + str(error["message"])[:200]
    return response.reason_phrase or str(response.status_code)

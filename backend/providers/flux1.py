"""`flux1`: Black Forest Labs' FLUX.1 on Replicate, through Replicate's HTTP predictions API.

Create a prediction of an official model (`POST /v1/models/{owner}/{name}/predictions`), save
its id at once, poll `GET /v1/predictions/{id}` every `poll_interval` seconds, and fetch the
output as soon as it is there (Replicate deletes outputs after an hour). A restarted step polls
the saved prediction instead of paying for a new one; a cancelled job cancels the prediction
(`POST /v1/predictions/{id}/cancel`).

This speaks HTTP with httpx rather than through the `replicate` package: that client retries
reads by itself, up to ten times and unlogged, and drops the `Retry-After` of the answers it
turns into exceptions, while every attempt here has to be bounded, logged in the step and timed
by the provider's own Retry-After.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..settings import Settings
from .base import ImageRequest, ImageResult, ProviderError, StepContext
from .remote import as_png, download, same_origin
from .retry import OutcomeUnknown, RetryPolicy, Transient, finish_despite_cancel, send, status_reason, with_retries

LABEL = "Replicate"
#: The aspect ratio FLUX.1 is asked for, by the image size a job asks for.
ASPECT_RATIOS = {"1024x1024": "1:1", "1792x1024": "16:9", "1024x1792": "9:16"}
#: Replicate's terminal statuses; `aborted` means it never ran (e.g. its deadline passed first).
TERMINAL = {"succeeded", "failed", "canceled", "aborted"}
#: tqdm progress lines in FLUX's logs: " 50%|█████     | 2/4 [00:01<00:01, ...]".
PERCENT = re.compile(r"(\d{1,3})%\|")
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
#: Longest a prediction may take before the step gives up on it (s).
DEFAULT_MAX_WAIT = 30 * 60.0


def log_percent(logs: str | None) -> int | None:
    """The last progress percentage in a prediction's logs, if it printed one."""
    found = PERCENT.findall(logs or "")
    return min(100, int(found[-1])) if found else None


def problem_text(response: httpx.Response) -> str:
    """The readable part of a Replicate error (RFC 7807 problem details)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or status_reason(response)
    if not isinstance(body, dict):
        return str(body)[:200]
    detail = str(body.get("detail") or body.get("title") or "").strip()
    return detail or status_reason(response)


class FluxImageProvider:
    name = "flux1"

    def __init__(
        self,
        settings: Settings,
        *,
        policy: RetryPolicy | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_wait: float = DEFAULT_MAX_WAIT,
        on_key_rejected: Callable[[str], None] | None = None,
    ):
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self.max_wait = max_wait
        self.on_key_rejected = on_key_rejected

    @property
    def base_url(self) -> str:
        return self.settings.replicate_base_url.rstrip("/")

    def model_for(self, quality: str) -> str:
        return self.settings.flux_model_high if quality == "high" else self.settings.flux_model_standard

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.replicate_api_token}", "User-Agent": "promptreel"}

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=self._headers(), timeout=self.timeout)

    # -- the step --------------------------------------------------------------------

    async def generate(self, request: ImageRequest, ctx: StepContext) -> ImageResult:
        model = self.model_for(request.quality)
        async with self._client() as client:
            if ctx.remote_id:
                prediction_id = ctx.remote_id
                ctx.log(f"polling Replicate prediction {prediction_id} again (started before a restart)")
            else:
                prediction_id = await self._create(client, model, request, ctx)
            prediction = await self._wait(client, prediction_id, ctx)
            model = str(prediction.get("model") or model)
            url = self._output_url(prediction)
        ctx.progress(0.9, "downloading the image from Replicate")
        # A client of its own: the API token goes to Replicate's API host only, never to the file host.
        headers = self._headers() if same_origin(url, self.base_url) else None
        async with httpx.AsyncClient(timeout=self.timeout) as files:
            data = await download(files, url, ctx=ctx, provider=self.name, label=LABEL, policy=self.policy, what="the image", headers=headers)
        png, size = as_png(data, provider=self.name, label=LABEL)
        ctx.log(f"FLUX.1 made a {size[0]}x{size[1]} image")
        return ImageResult(png=png, model=model, metadata={"replicatePredictionId": prediction_id})

    async def _create(self, client: httpx.AsyncClient, model: str, request: ImageRequest, ctx: StepContext) -> str:
        owner, _, name = model.partition("/")
        if not owner or not name:
            raise ProviderError(self.name, f"the FLUX model setting {model!r} is not of the form owner/name")
        size = f"{request.width}x{request.height}"
        if size not in ASPECT_RATIOS:
            raise ProviderError(self.name, f"FLUX.1 cannot make a {size} image")
        body = {"input": {"prompt": request.prompt, "aspect_ratio": ASPECT_RATIOS[size], "seed": request.seed, "output_format": "png"}}
        ctx.log(f"starting {model} on Replicate: aspect ratio {ASPECT_RATIOS[size]}, seed {request.seed}")

        async def attempt() -> str:
            response, cancelled = await finish_despite_cancel(send(client, "POST", f"/v1/models/{owner}/{name}/predictions", creates=True, json=body))
            if cancelled:  # the job was cancelled while Replicate answered: keep what it started, so it is cancelled too
                try:
                    await ctx.save_remote_id(self._created_id(response))
                except ProviderError:
                    pass  # nothing was started
                raise asyncio.CancelledError()
            return self._created_id(response)

        try:
            prediction_id = await with_retries(attempt, ctx=ctx, provider=self.name, label=LABEL, what="starting the prediction", policy=self.policy)
        except OutcomeUnknown as error:
            raise ProviderError(
                self.name,
                f"Replicate did not answer the request to start the prediction: {error.reason}. It may have started "
                "anyway, so it was not sent again (that could bill twice); see replicate.com/predictions.",
                transient=True,
            ) from error
        await ctx.save_remote_id(prediction_id)
        return prediction_id

    def _created_id(self, response: httpx.Response) -> str:
        if response.status_code in (200, 201):
            try:
                prediction = response.json()
            except ValueError:
                prediction = None
            if isinstance(prediction, dict) and prediction.get("id"):
                return str(prediction["id"])
            raise ProviderError(self.name, "Replicate started a prediction but its answer has no prediction id")
        raise self._explain(response, "starting the prediction", creates=True)

    def _explain(self, response: httpx.Response, what: str, *, creates: bool = False) -> ProviderError:
        status, detail = response.status_code, problem_text(response)
        if status == 401:
            reason = "Replicate rejected the API token (401)"
            if self.on_key_rejected:
                self.on_key_rejected(reason)
            return ProviderError(self.name, f"{reason}: check REPLICATE_API_TOKEN", code="PROVIDER_AUTH")
        if status == 402:
            return ProviderError(self.name, f"Replicate refused to bill this account (402): {detail}", code="PROVIDER_BILLING")
        if status == 403:
            return ProviderError(self.name, f"Replicate refused access while {what} (403): {detail}", code="PROVIDER_AUTH")
        if status == 404:
            return ProviderError(self.name, f"Replicate does not know this while {what} (404): {detail}; check the FLUX model settings and REPLICATE_BASE_URL")
        if status in (400, 422):
            return ProviderError(self.name, f"Replicate refused the input ({status}): {detail}")
        if status >= 500 and creates:
            return ProviderError(
                self.name,
                f"Replicate failed while {what} ({status}: {detail}); it was not sent again, as it may have started the work",
                transient=True,
            )
        return ProviderError(self.name, f"Replicate answered {status} while {what}: {detail}", transient=status >= 500)

    async def _get(self, client: httpx.AsyncClient, prediction_id: str, ctx: StepContext) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            response = await send(client, "GET", f"/v1/predictions/{prediction_id}")
            if response.status_code != 200:
                raise self._explain(response, f"polling prediction {prediction_id}")
            try:
                prediction = response.json()
            except ValueError as error:
                raise Transient("the answer was not JSON") from error
            if not isinstance(prediction, dict):
                raise Transient("the answer was not a prediction")
            return prediction

        return await with_retries(attempt, ctx=ctx, provider=self.name, label=LABEL, what=f"polling prediction {prediction_id}", policy=self.policy)

    async def _wait(self, client: httpx.AsyncClient, prediction_id: str, ctx: StepContext) -> dict[str, Any]:
        deadline = time.monotonic() + self.max_wait
        last_status = None
        while True:
            prediction = await self._get(client, prediction_id, ctx)
            status = str(prediction.get("status"))
            if status != last_status:
                ctx.log(f"prediction {prediction_id} is {status}")
                last_status = status
            if status == "starting":
                ctx.progress(0.05)
            elif status == "processing":
                percent = log_percent(prediction.get("logs"))
                ctx.progress(0.1 + 0.75 * (percent or 0) / 100)
            elif status == "succeeded":
                return prediction
            elif status == "failed":
                error = str(prediction.get("error") or "no reason given").strip()
                raise ProviderError(self.name, f"FLUX.1 on Replicate failed: {error}")
            elif status == "canceled":
                raise ProviderError(self.name, f"the prediction {prediction_id} was cancelled at Replicate")
            elif status == "aborted":
                raise ProviderError(
                    self.name, f"Replicate aborted the prediction {prediction_id} before it ran (it is not billed); try again", transient=True
                )
            if time.monotonic() > deadline:
                raise ProviderError(self.name, f"the prediction {prediction_id} did not finish within {self.max_wait / 60:g} minutes", transient=True)
            await asyncio.sleep(self.settings.poll_interval)

    def _output_url(self, prediction: dict[str, Any]) -> str:
        if prediction.get("data_removed"):
            raise ProviderError(self.name, "Replicate has already deleted this prediction's output (outputs are kept for an hour)", code="PROVIDER_OUTPUT_GONE")
        output = prediction.get("output")
        if isinstance(output, list):  # flux-schnell and flux-dev answer a list, one URL per image
            output = next((item for item in output if isinstance(item, str) and item), None)
        if not isinstance(output, str) or not output:
            raise ProviderError(self.name, "Replicate says the prediction succeeded but it has no output")
        return output

    # -- cancel and key check ----------------------------------------------------------------

    async def cancel_remote(self, remote_id: str) -> None:
        async with self._client() as client:

            async def attempt() -> None:
                response = await send(client, "POST", f"/v1/predictions/{remote_id}/cancel")
                if response.status_code not in (200, 201, 202, 204, 404):
                    raise self._explain(response, f"cancelling prediction {remote_id}")

            await with_retries(attempt, ctx=None, provider=self.name, label=LABEL, what=f"cancelling prediction {remote_id}", policy=self.policy)

    def check_key(self, timeout: float = 5.0) -> tuple[bool | None, str | None]:
        """Whether Replicate accepts the token, asked of `GET /v1/account` (free): (ok, reason)."""
        response = httpx.get(f"{self.base_url}/v1/account", headers=self._headers(), timeout=timeout)
        if response.status_code == 401:
            return False, "Replicate rejected the API token (401)"
        if response.is_success:
            return True, None
        return None, f"Replicate answered {response.status_code}"

"""`replicate` (the guide's `flux1`): image models on Replicate (FLUX by default), through
Replicate's HTTP predictions API. Each model's catalog entry says how the job's fields map onto
the model's input (prompt, aspect ratio or width/height, seed), so a model added in a user's
catalog file runs without a release.

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
import tempfile
from pathlib import Path
from typing import Any

import httpx

from backend.providers.base import ImageRequest, ImageResult, ProviderError, StepContext
from backend.providers.catalog import ModelEntry, active
from backend.providers.remote import as_png, key_check_get
from backend.providers.remote_task import RemoteTaskProvider, error_body
from backend.providers.retry import status_reason

LABEL = "Replicate"
#: tqdm progress lines in FLUX's logs: " 50%|█████     | 2/4 [00:01<00:01, ...]".
PERCENT = re.compile(r"(\d{1,3})%\|")


def log_percent(logs: str | None) -> int | None:
    """The last progress percentage in a prediction's logs, if it printed one."""
    found = PERCENT.findall(logs or "")
    return min(100, int(found[-1])) if found else None


def problem_text(response: httpx.Response) -> str:
    """The readable part of a Replicate error (RFC 7807 problem details)."""
    body = error_body(response)
    if isinstance(body, str):
        return body
    detail = str(body.get("detail") or body.get("title") or "").strip()
    return detail or status_reason(response)


class ReplicateImageProvider(RemoteTaskProvider):
    name = "replicate"
    label = LABEL
    noun = "prediction"
    create_what = "starting the prediction"
    key_rejected = "Replicate rejected the API token (401)"
    key_setting = "REPLICATE_API_TOKEN"
    created_status = (200, 201)
    poll_path = "/v1/predictions/{id}"
    _detail = staticmethod(problem_text)
    cancel_method, cancel_path, cancel_ok = "POST", "/v1/predictions/{id}/cancel", (200, 201, 202, 204, 404)

    @property
    def base_url(self) -> str:
        return self.settings.replicate_base_url.rstrip("/")

    def model_for(self, quality: str) -> str:
        return self.settings.flux_model_high if quality == "high" else self.settings.flux_model_standard

    def _model(self, request: ImageRequest) -> str:
        return request.model or self.model_for(request.quality)

    def _entry(self, model: str) -> ModelEntry:
        entry = active().get(model)
        if entry is None or entry.provider != "replicate" or entry.kind != "image" or entry.input is None:
            raise ProviderError(
                self.name, f"'{model}' is not a Replicate image model of the model catalog: add it there", code="MODEL_UNKNOWN"
            )
        return entry

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.replicate_api_token}", "User-Agent": "promptreel"}

    # -- the step --------------------------------------------------------------------

    async def _predict(self, request: Any, ctx: StepContext, model: str) -> tuple[str, dict[str, Any]]:
        """The model's prediction, run to its end (`_run`); a model Replicate says does not exist
        is told as such, naming it and the way out (`_model_missing`)."""
        try:
            return await self._run(request, ctx)
        except ProviderError as error:
            if error.code != "MODEL_NOT_FOUND":
                raise
            raise self._model_missing(model, error) from error

    async def generate(self, request: ImageRequest, ctx: StepContext) -> ImageResult:
        model = self._model(request)
        prediction_id, prediction = await self._predict(request, ctx, model)
        url = self._output_url(prediction)
        ctx.progress(0.9, "downloading the image from Replicate")
        with tempfile.TemporaryDirectory(prefix="promptreel-replicate-") as folder:
            output = Path(folder) / "output"
            await self._download_output(url, output, kind="image", ctx=ctx)
            png, size = await asyncio.to_thread(as_png, output, self.limits, provider=self.name, label=LABEL)
        ctx.log(f"{model} made a {size[0]}x{size[1]} image")
        return ImageResult(png=png, model=model, metadata={"replicatePredictionId": prediction_id})

    async def _create_request(self, request: ImageRequest, ctx: StepContext) -> tuple[str, dict[str, Any]]:
        model = self._model(request)
        entry = self._entry(model)
        owner, _, name = model.partition("/")
        size = f"{request.width}x{request.height}"
        if size not in entry.sizes:
            raise ProviderError(
                self.name, f"{model} cannot make a {size} image (its catalog entry lists {', '.join(entry.sizes)})"
            )
        fields = entry.input
        assert fields is not None
        inputs: dict[str, Any] = {**fields.fixed, fields.prompt: request.prompt}
        if fields.aspectRatio:
            inputs[fields.aspectRatio] = entry.sizes[size]
        if fields.width and fields.height:
            inputs[fields.width], inputs[fields.height] = request.width, request.height
        if fields.seed:
            inputs[fields.seed] = request.seed
        shape = f"aspect ratio {entry.sizes[size]}" if fields.aspectRatio else size
        ctx.log(f"starting {model} on Replicate: {shape}, seed {request.seed if fields.seed else 'not taken'}")
        return f"/v1/models/{owner}/{name}/predictions", {"input": inputs}

    def _outcome_unknown(self, reason: str) -> str:
        return (
            f"Replicate did not answer the request to start the prediction: {reason}. It may have started "
            "anyway, so it was not sent again (that could bill twice); see replicate.com/predictions."
        )

    def _refusal(self, status: int, detail: str, what: str) -> ProviderError | None:
        if status == 402:
            return ProviderError(self.name, f"Replicate refused to bill this account (402): {detail}", code="PROVIDER_BILLING")
        if status == 403:
            return ProviderError(self.name, f"Replicate refused access while {what} (403): {detail}", code="PROVIDER_AUTH")
        if status == 404 and what == self.create_what:  # generate() names the model and the way out
            return ProviderError(self.name, f"404: {detail}", code="MODEL_NOT_FOUND")
        if status == 404:
            return ProviderError(self.name, f"Replicate does not know this while {what} (404): {detail}")
        if status in (400, 422):
            return ProviderError(self.name, f"Replicate refused the input ({status}): {detail}")
        return None

    def _billed_model(self, request: ImageRequest, prediction: dict[str, Any]) -> str:
        return self._model(request)  # the catalog id, as priced (the prediction may name a version)

    def _status_line(self, remote_id: str, status: str) -> str:
        return f"prediction {remote_id} is {status}"

    def _settle(self, remote_id: str, status: str, prediction: dict[str, Any], ctx: StepContext) -> bool:
        if status == "starting":
            ctx.progress(0.05)
        elif status == "processing":
            percent = log_percent(prediction.get("logs"))
            ctx.progress(0.1 + 0.75 * (percent or 0) / 100)
        elif status == "succeeded":
            return True
        elif status == "failed":
            error = str(prediction.get("error") or "no reason given").strip()
            raise ProviderError(self.name, f"{prediction.get('model') or 'the model'} on Replicate failed: {error}")
        elif status == "canceled":
            raise ProviderError(self.name, f"the prediction {remote_id} was cancelled at Replicate")
        elif status == "aborted":  # it never ran (e.g. its deadline passed first)
            raise ProviderError(
                self.name,
                f"Replicate aborted the prediction {remote_id} before it ran (it is not billed); try again",
                transient=True,
            )
        return False

    def _output_url(self, prediction: dict[str, Any]) -> str:
        if prediction.get("data_removed"):
            raise ProviderError(
                self.name,
                "Replicate has already deleted this prediction's output (outputs are kept for an hour)",
                code="PROVIDER_OUTPUT_GONE",
            )
        output = prediction.get("output")
        if isinstance(output, list):  # flux-schnell and flux-dev answer a list, one URL per image
            output = next((item for item in output if isinstance(item, str) and item), None)
        if not isinstance(output, str) or not output:
            raise ProviderError(self.name, "Replicate says the prediction succeeded but it has no output")
        return output

    # -- key check -------------------------------------------------------------------------

    def check_key(self, timeout: float = 5.0) -> tuple[bool | None, str | None]:
        """Whether Replicate accepts the token, asked of `GET /v1/account` (free): (ok, reason)."""
        response = key_check_get(
            f"{self.base_url}/v1/account", provider=self.name, label=self.label, headers=self._headers(), timeout=timeout
        )
        if response.status_code == 401:
            return False, self.key_rejected
        if response.is_success:
            return True, None
        return None, f"Replicate answered {response.status_code}"

    def check_model(self, model: str, timeout: float = 5.0) -> tuple[bool | None, str | None]:
        """Whether Replicate serves `model`, from `GET /v1/models/{owner}/{name}` (free)."""
        response = key_check_get(
            f"{self.base_url}/v1/models/{model}", provider=self.name, label=self.label, headers=self._headers(), timeout=timeout
        )
        if response.status_code == 404:
            return False, f"Replicate answered that the model does not exist (404: {problem_text(response)})"
        if response.is_success:
            return True, None
        return None, f"Replicate answered {response.status_code}"

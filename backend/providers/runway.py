"""`runway`: Runway's image-to-video REST API (https://docs.dev.runwayml.com/api/).

`POST /v1/image_to_video` starts a task; its id is saved at once; `GET /v1/tasks/{id}` is polled
every `poll_interval` seconds (PENDING, THROTTLED, RUNNING with its progress, then SUCCEEDED,
FAILED or CANCELLED); the MP4 is fetched as soon as it exists (its link expires) and checked to
decode as video before it is stored. A restarted step polls the saved task instead of paying
for a new one; a cancelled job deletes the task (`DELETE /v1/tasks/{id}`). Every request
carries the `X-Runway-Version` header that the API requires.
"""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from backend.media.checks import MediaLimits, MediaRejected, open_image
from backend.providers.base import ProviderError, StepContext, VideoRequest, VideoResult
from backend.providers.catalog import active
from backend.providers.pricing import RUNWAY_USD_PER_CREDIT
from backend.providers.remote import key_check_get
from backend.providers.remote_task import RemoteTaskProvider, error_body
from backend.providers.retry import status_reason

LABEL = "Runway"
#: Ratios for a model the catalog does not list (gen4_turbo's, from Runway's API reference).
FALLBACK_RATIOS: tuple[str, ...] = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
#: Runway's limit on a data URI image, "5MB"; kept a little under, for the URI's own prefix.
MAX_DATA_URI_CHARS = 5_000_000
#: `promptText` is "a non-empty string up to 1000 characters (measured in UTF-16 code units)".
MAX_PROMPT_UTF16 = 1000
#: What the log says of a waiting task's status.
WAITING = {"PENDING": "queued", "THROTTLED": "waiting for other tasks of this account to finish"}


def truncate_utf16(text: str, limit: int = MAX_PROMPT_UTF16) -> str:
    """`text` cut to at most `limit` UTF-16 code units, never through a surrogate pair."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return text[:index]
    return text


def pick_ratio(model: str, width: int, height: int) -> str:
    """The model's allowed output ratio (its catalog entry's) closest to the image's own shape."""
    entry = active().get(model)
    ratios = tuple(entry.ratios) if entry is not None and entry.ratios else FALLBACK_RATIOS
    target = width / height

    def distance(ratio: str) -> float:
        w, h = (int(part) for part in ratio.split(":"))
        return abs((w / h) / target - 1)

    return min(ratios, key=distance)


def image_data_uri(
    path: Path, limit: int = MAX_DATA_URI_CHARS, limits: MediaLimits = MediaLimits()
) -> tuple[str, tuple[int, int], str]:
    """The image as a data URI within Runway's limit: as it is when it fits, else re-encoded as
    JPEG (smaller quality, then smaller size, until it fits). Returns (uri, size, note). The image
    is checked against `limits` before it is read whole or decoded."""
    try:
        with open_image(path, limits, whose="the image to animate") as image:
            image.load()
            kind = (image.format or "").upper()
            rgb = image.convert("RGB")
    except MediaRejected as error:
        raise ProviderError("runway", str(error)) from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ProviderError("runway", "the image to animate does not decode") from error
    raw = path.read_bytes()
    mime = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}.get(kind)
    if mime:
        uri = f"data:{mime};base64,{base64.b64encode(raw).decode()}"
        if len(uri) <= limit:
            return uri, rgb.size, f"sent as {kind} ({len(raw) // 1024} KB)"
    candidate = rgb
    while True:
        for quality in (92, 85, 75):
            buffer = io.BytesIO()
            candidate.save(buffer, format="JPEG", quality=quality, optimize=True)
            uri = f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}"
            if len(uri) <= limit:
                note = (
                    f"re-encoded as JPEG quality {quality} ({len(buffer.getvalue()) // 1024} KB)"
                    " to fit Runway's 5 MB data URI limit"
                )
                if candidate.size != rgb.size:
                    note += f", scaled to {candidate.size[0]}x{candidate.size[1]}"
                return uri, rgb.size, note
        candidate = candidate.resize(
            (max(1, candidate.width * 3 // 4), max(1, candidate.height * 3 // 4)), Image.Resampling.LANCZOS
        )


#: A FAILED task's `failureCode` by its prefix, most specific first: what to say, and whether
#: trying again could help.
FAILURE_CODES: tuple[tuple[str, str, bool], ...] = (
    ("SAFETY.INPUT.IMAGE", "Runway refused the input image ({code})", False),
    ("SAFETY.INPUT.TEXT", "Runway refused the prompt text ({code})", False),
    ("SAFETY.INPUT", "Runway refused the input ({code})", False),
    ("SAFETY.OUTPUT", "Runway's moderation rejected the generated video ({code})", False),
    (
        "INTERNAL.BAD_OUTPUT",
        "Runway rejected its own video for quality reasons ({code}); a different image or prompt may work",
        True,
    ),
    ("ASSET.INVALID", "Runway could not use the input image ({code})", False),
    ("INPUT_PREPROCESSING", "Runway could not prepare the input ({code}): {failure}", False),
    ("INTERNAL", "Runway failed with an internal error ({code}); try again", True),
)


def failure_message(code: str, failure: str) -> tuple[str, bool]:
    """A FAILED task's reason in plain words, and whether trying again could help."""
    for prefix, text, transient in FAILURE_CODES:
        if code.startswith(prefix):
            return text.format(code=code, failure=failure), transient
    reason = failure or "no reason given"
    return (f"Runway failed the task: {reason} ({code})" if code else f"Runway failed the task: {reason}"), False


def error_text(response: httpx.Response) -> str:
    """Runway's error body `{"error": ..., "issues": [...]}` in one line."""
    body = error_body(response)
    if isinstance(body, str):
        return body
    text = str(body.get("error") or status_reason(response))
    issues = body.get("issues")
    if isinstance(issues, list) and issues:
        parts = []
        for issue in issues[:3]:
            if isinstance(issue, dict):
                where = ".".join(str(part) for part in issue.get("path") or [])
                parts.append(f"{where}: {issue.get('message')}" if where else str(issue.get("message")))
        text += " (" + "; ".join(parts) + ")"
    return text


class RunwayVideoProvider(RemoteTaskProvider):
    name = "runway"
    label = LABEL
    noun = "task"
    create_what = "starting the video task"
    key_rejected = "Runway rejected the API secret (401)"
    key_setting = "RUNWAYML_API_SECRET"
    poll_path = "/v1/tasks/{id}"
    _detail = staticmethod(error_text)
    #: Cancels a running task, or deletes a finished one.
    cancel_method, cancel_path, cancel_ok = "DELETE", "/v1/tasks/{id}", (200, 202, 204, 404)

    @property
    def model(self) -> str:
        return self.settings.runway_model

    @property
    def base_url(self) -> str:
        return self.settings.runwayml_base_url.rstrip("/")

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.settings.runwayml_api_secret}",
            "X-Runway-Version": self.settings.runway_api_version,
            "User-Agent": "promptreel",
        }

    # -- the step --------------------------------------------------------------------

    async def animate(self, request: VideoRequest, ctx: StepContext) -> VideoResult:
        model = self._model(request)
        try:
            task_id, task = await self._run(request, ctx)
        except ProviderError as error:
            if error.code != "MODEL_NOT_FOUND":
                raise
            raise self._model_missing(model, error, "choose another model (gen4.5, gen4_turbo)") from error
        output = task.get("output")
        url = next((item for item in output if isinstance(item, str) and item), None) if isinstance(output, list) else None
        if not url:
            raise ProviderError(self.name, f"Runway says task {task_id} succeeded but it has no output")
        ctx.progress(0.92, "downloading the video from Runway")
        width, height, seconds = await self._download_video(url, request.output_path, ctx)
        ctx.log(f"Runway made a {width}x{height} video of {seconds:.1f} s")
        return VideoResult(model=self._model(request), width=width, height=height, metadata={"runwayTaskId": task_id})

    def _model(self, request: VideoRequest) -> str:
        return request.model or self.model

    async def _create_request(self, request: VideoRequest, ctx: StepContext) -> tuple[str, dict[str, Any]]:
        model = self._model(request)
        uri, (width, height), note = await asyncio.to_thread(image_data_uri, request.image_path, limits=self.limits)
        ratio = pick_ratio(model, width, height)
        prompt = truncate_utf16(request.prompt.strip())
        body: dict[str, Any] = {"model": model, "promptImage": uri, "ratio": ratio, "duration": request.duration}
        if not model.startswith("veo"):  # Veo models take no seed (runwayml's image_to_video_create_params.py)
            body["seed"] = request.seed
        if prompt:
            body["promptText"] = prompt
        shortened = " (prompt cut to Runway's 1000-character limit)" if prompt != request.prompt.strip() else ""
        ctx.log(f"starting {model} on Runway: {request.duration} s at {ratio}, seed {request.seed}; image {note}{shortened}")
        return "/v1/image_to_video", body

    def _outcome_unknown(self, reason: str) -> str:
        return (
            f"Runway did not answer the request to start the video: {reason}. It may have started anyway, "
            "so it was not sent again (that could bill twice)."
        )

    def _refusal(self, status: int, detail: str, what: str) -> ProviderError | None:
        if status == 400 and "credit" in detail.lower():
            return ProviderError(
                self.name, f"Runway refused to start the video: not enough credits ({detail})", code="PROVIDER_BILLING"
            )
        if status == 400 and "(model: " in detail:  # its validator refused the model itself: animate() names it
            return ProviderError(self.name, detail, code="MODEL_NOT_FOUND")
        if status == 400:
            return ProviderError(self.name, f"Runway refused the request (400): {detail}")
        if status in (404, 405):
            return ProviderError(self.name, f"Runway answered {status} while {what}: {detail}; check RUNWAYML_BASE_URL")
        return None

    def _explain_poll(self, response: httpx.Response, remote_id: str) -> ProviderError:
        if response.status_code == 404:
            return ProviderError(self.name, f"Runway no longer knows task {remote_id} (404): it was deleted or never existed")
        return super()._explain_poll(response, remote_id)

    def _billed_model(self, request: VideoRequest, task: dict[str, Any]) -> str:
        return self._model(request)

    def _status_line(self, remote_id: str, status: str) -> str:
        return f"Runway task {remote_id} is {status}" + (f" ({WAITING[status]})" if status in WAITING else "")

    def _settle(self, remote_id: str, status: str, task: dict[str, Any], ctx: StepContext) -> bool:
        if status == "PENDING":
            ctx.progress(0.03)
        elif status == "THROTTLED":
            ctx.progress(0.02)
        elif status == "RUNNING":
            fraction = task.get("progress")
            fraction = float(fraction) if isinstance(fraction, (int, float)) else 0.0
            ctx.progress(0.05 + 0.85 * max(0.0, min(1.0, fraction)))
        elif status == "SUCCEEDED":
            return True
        elif status == "FAILED":
            code = str(task.get("failureCode") or "")
            message, transient = failure_message(code, str(task.get("failure") or "").strip())
            raise ProviderError(self.name, message, code="PROVIDER_TASK_FAILED", transient=transient)
        elif status == "CANCELLED":
            raise ProviderError(self.name, f"the task {remote_id} was cancelled at Runway")
        return False

    # -- key check -------------------------------------------------------------------------

    def check_key(self, timeout: float = 5.0) -> tuple[bool | None, str | None]:
        """Whether Runway accepts the secret and has credits for a video, from `GET /v1/organization`."""
        response = key_check_get(
            f"{self.base_url}/v1/organization", provider=self.name, label=self.label, headers=self._headers(), timeout=timeout
        )
        if response.status_code == 401:
            return False, self.key_rejected
        if not response.is_success:
            return None, f"Runway answered {response.status_code}"
        try:
            balance = response.json().get("creditBalance")
        except (ValueError, AttributeError):
            return True, None
        entry = active().get(self.model)
        per_second = entry.price.usdPerSecond if entry is not None and entry.price is not None else None
        needed = round((per_second if per_second is not None else 0.05) * 5 / RUNWAY_USD_PER_CREDIT)
        if isinstance(balance, (int, float)) and balance < needed:
            return False, f"Runway has {balance:g} credits left; a 5 s {self.model} video needs {needed}"
        return True, None

    def check_model(self, model: str, timeout: float = 5.0) -> tuple[bool | None, str | None]:
        """Whether this organization may run `model`: `GET /v1/organization` lists a limit for each
        model its tier allows (`tier.models`); a model missing from a list that names others is not."""
        response = key_check_get(
            f"{self.base_url}/v1/organization", provider=self.name, label=self.label, headers=self._headers(), timeout=timeout
        )
        if not response.is_success:
            return None, f"Runway answered {response.status_code}"
        try:
            models = response.json().get("tier", {}).get("models")
        except (ValueError, AttributeError):
            return None, "Runway's organization answer is not readable"
        if isinstance(models, dict) and models and model not in models:
            return False, f"Runway's organization lists no limits for {model} (its tier allows {', '.join(sorted(models))})"
        return True, None

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
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import httpx
from PIL import Image, UnidentifiedImageError

from ..pricing import RUNWAY_CREDITS_PER_SECOND
from ..settings import Settings
from .base import ProviderError, StepContext, VideoRequest, VideoResult
from .remote import download, same_origin
from .retry import OutcomeUnknown, RetryPolicy, Transient, finish_despite_cancel, send, status_reason, with_retries

LABEL = "Runway"
#: The output resolutions ("ratio") each model accepts, from Runway's API reference.
MODEL_RATIOS: dict[str, tuple[str, ...]] = {
    "gen4_turbo": ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672"),
    "gen3a_turbo": ("1280:768", "768:1280"),
}
#: Runway's limit on a data URI image, "5MB"; kept a little under, for the URI's own prefix.
MAX_DATA_URI_CHARS = 5_000_000
#: `promptText` is "a non-empty string up to 1000 characters (measured in UTF-16 code units)".
MAX_PROMPT_UTF16 = 1000
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_MAX_WAIT = 30 * 60.0
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def truncate_utf16(text: str, limit: int = MAX_PROMPT_UTF16) -> str:
    """`text` cut to at most `limit` UTF-16 code units, never through a surrogate pair."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return text[:index]
    return text


def pick_ratio(model: str, width: int, height: int) -> str:
    """The model's allowed output ratio closest to the image's own shape."""
    ratios = MODEL_RATIOS.get(model, MODEL_RATIOS["gen4_turbo"])
    target = width / height

    def distance(ratio: str) -> float:
        w, h = (int(part) for part in ratio.split(":"))
        return abs((w / h) / target - 1)

    return min(ratios, key=distance)


def image_data_uri(path: Path, limit: int = MAX_DATA_URI_CHARS) -> tuple[str, tuple[int, int], str]:
    """The image as a data URI within Runway's limit: as it is when it fits, else re-encoded as
    JPEG (smaller quality, then smaller size, until it fits). Returns (uri, size, note)."""
    raw = path.read_bytes()
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            kind = (image.format or "").upper()
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ProviderError("runway", "the image to animate does not decode") from error
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
                note = f"re-encoded as JPEG quality {quality} ({len(buffer.getvalue()) // 1024} KB) to fit Runway's 5 MB data URI limit"
                if candidate.size != rgb.size:
                    note += f", scaled to {candidate.size[0]}x{candidate.size[1]}"
                return uri, rgb.size, note
        candidate = candidate.resize((max(1, candidate.width * 3 // 4), max(1, candidate.height * 3 // 4)), Image.Resampling.LANCZOS)


def probe_video(path: Path) -> tuple[int, int, float]:
    """(width, height, seconds) of a file that really decodes as video; raises ValueError if not."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            frame = next(container.decode(stream), None)
            if frame is None:
                raise ValueError("no frame decodes")
            seconds = float(container.duration / av.time_base) if container.duration else 0.0
            return frame.width, frame.height, seconds
    except (av.FFmpegError, StopIteration, OSError) as error:
        raise ValueError(str(error)) from error


def failure_message(code: str, failure: str) -> tuple[str, bool]:
    """A FAILED task's reason in plain words, and whether trying again could help."""
    if code.startswith("SAFETY.INPUT.IMAGE"):
        return f"Runway refused the input image ({code})", False
    if code.startswith("SAFETY.INPUT.TEXT"):
        return f"Runway refused the prompt text ({code})", False
    if code.startswith("SAFETY.INPUT"):
        return f"Runway refused the input ({code})", False
    if code.startswith("SAFETY.OUTPUT"):
        return f"Runway's moderation rejected the generated video ({code})", False
    if code.startswith("INTERNAL.BAD_OUTPUT"):
        return f"Runway rejected its own video for quality reasons ({code}); a different image or prompt may work", True
    if code.startswith("ASSET.INVALID"):
        return f"Runway could not use the input image ({code})", False
    if code.startswith("INPUT_PREPROCESSING"):
        return f"Runway could not prepare the input ({code}): {failure}", False
    if code.startswith("INTERNAL"):
        return f"Runway failed with an internal error ({code}); try again", True
    reason = failure or "no reason given"
    return (f"Runway failed the task: {reason} ({code})" if code else f"Runway failed the task: {reason}"), False


def error_text(response: httpx.Response) -> str:
    """Runway's error body `{"error": ..., "issues": [...]}` in one line."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or status_reason(response)
    if not isinstance(body, dict):
        return str(body)[:200]
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


class RunwayVideoProvider:
    name = "runway"

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

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=self._headers(), timeout=self.timeout)

    # -- the step --------------------------------------------------------------------

    async def animate(self, request: VideoRequest, ctx: StepContext) -> VideoResult:
        async with self._client() as client:
            if ctx.remote_id:
                task_id = ctx.remote_id
                ctx.log(f"polling Runway task {task_id} again (started before a restart)")
            else:
                task_id = await self._create(client, request, ctx)
            task = await self._wait(client, task_id, ctx)
            output = task.get("output")
            url = next((item for item in output if isinstance(item, str) and item), None) if isinstance(output, list) else None
            if not url:
                raise ProviderError(self.name, f"Runway says task {task_id} succeeded but it has no output")
        ctx.progress(0.92, "downloading the video from Runway")
        partial = request.output_path.with_name(request.output_path.name + ".part")
        # A client of its own: the API secret goes to Runway's API host only, never to the CDN.
        headers = self._headers() if same_origin(url, self.base_url) else None
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as files:
                await download(files, url, ctx=ctx, provider=self.name, label=LABEL, policy=self.policy, what="the video", dest=partial, headers=headers)
            try:
                width, height, seconds = await asyncio.to_thread(probe_video, partial)
            except ValueError as error:
                raise ProviderError(self.name, f"Runway's output is not a playable video ({error})") from error
            os.replace(partial, request.output_path)  # atomic: a reader never sees half a file
        finally:
            partial.unlink(missing_ok=True)
        ctx.log(f"Runway made a {width}x{height} video of {seconds:.1f} s")
        return VideoResult(model=self.model, width=width, height=height, metadata={"runwayTaskId": task_id})

    async def _create(self, client: httpx.AsyncClient, request: VideoRequest, ctx: StepContext) -> str:
        uri, (width, height), note = await asyncio.to_thread(image_data_uri, request.image_path)
        ratio = pick_ratio(self.model, width, height)
        prompt = truncate_utf16(request.prompt.strip())
        body: dict[str, Any] = {
            "model": self.model,
            "promptImage": uri,
            "ratio": ratio,
            "duration": request.duration,
            "seed": request.seed,
        }
        if prompt:
            body["promptText"] = prompt
        shortened = " (prompt cut to Runway's 1000-character limit)" if prompt != request.prompt.strip() else ""
        ctx.log(f"starting {self.model} on Runway: {request.duration} s at {ratio}, seed {request.seed}; image {note}{shortened}")

        async def attempt() -> str:
            response, cancelled = await finish_despite_cancel(send(client, "POST", "/v1/image_to_video", creates=True, json=body))
            if cancelled:  # the job was cancelled while Runway answered: keep what it started, so it is cancelled too
                try:
                    await ctx.save_remote_id(self._created_id(response))
                except ProviderError:
                    pass  # nothing was started
                raise asyncio.CancelledError()
            return self._created_id(response)

        try:
            task_id = await with_retries(attempt, ctx=ctx, provider=self.name, label=LABEL, what="starting the video task", policy=self.policy)
        except OutcomeUnknown as error:
            raise ProviderError(
                self.name,
                f"Runway did not answer the request to start the video: {error.reason}. It may have started anyway, "
                "so it was not sent again (that could bill twice).",
                transient=True,
            ) from error
        await ctx.save_remote_id(task_id)
        return task_id

    def _created_id(self, response: httpx.Response) -> str:
        if response.is_success:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("id"):
                return str(body["id"])
            raise ProviderError(self.name, "Runway started a task but its answer has no task id")
        raise self._explain(response, "starting the video task", creates=True)

    def _explain(self, response: httpx.Response, what: str, *, creates: bool = False) -> ProviderError:
        status, detail = response.status_code, error_text(response)
        if status == 401:
            reason = "Runway rejected the API secret (401)"
            if self.on_key_rejected:
                self.on_key_rejected(reason)
            return ProviderError(self.name, f"{reason}: check RUNWAYML_API_SECRET", code="PROVIDER_AUTH")
        if status == 400 and "credit" in detail.lower():
            return ProviderError(self.name, f"Runway refused to start the video: not enough credits ({detail})", code="PROVIDER_BILLING")
        if status == 400:
            return ProviderError(self.name, f"Runway refused the request (400): {detail}")
        if status in (404, 405):
            return ProviderError(self.name, f"Runway answered {status} while {what}: {detail}; check RUNWAYML_BASE_URL")
        if status >= 500 and creates:
            return ProviderError(
                self.name,
                f"Runway failed while {what} ({status}: {detail}); it was not sent again, as it may have started the work",
                transient=True,
            )
        return ProviderError(self.name, f"Runway answered {status} while {what}: {detail}", transient=status >= 500)

    async def _get(self, client: httpx.AsyncClient, task_id: str, ctx: StepContext) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            response = await send(client, "GET", f"/v1/tasks/{task_id}")
            if response.status_code == 404:
                raise ProviderError(self.name, f"Runway no longer knows task {task_id} (404): it was deleted or never existed")
            if response.status_code != 200:
                raise self._explain(response, f"polling task {task_id}")
            try:
                task = response.json()
            except ValueError as error:
                raise Transient("the answer was not JSON") from error
            if not isinstance(task, dict):
                raise Transient("the answer was not a task")
            return task

        return await with_retries(attempt, ctx=ctx, provider=self.name, label=LABEL, what=f"polling task {task_id}", policy=self.policy)

    async def _wait(self, client: httpx.AsyncClient, task_id: str, ctx: StepContext) -> dict[str, Any]:
        deadline = time.monotonic() + self.max_wait
        last_status = None
        while True:
            task = await self._get(client, task_id, ctx)
            status = str(task.get("status"))
            if status != last_status:
                explain = {"PENDING": "queued", "THROTTLED": "waiting for other tasks of this account to finish"}
                ctx.log(f"Runway task {task_id} is {status}" + (f" ({explain[status]})" if status in explain else ""))
                last_status = status
            if status == "PENDING":
                ctx.progress(0.03)
            elif status == "THROTTLED":
                ctx.progress(0.02)
            elif status == "RUNNING":
                fraction = task.get("progress")
                fraction = float(fraction) if isinstance(fraction, (int, float)) else 0.0
                ctx.progress(0.05 + 0.85 * max(0.0, min(1.0, fraction)))
            elif status == "SUCCEEDED":
                return task
            elif status == "FAILED":
                code = str(task.get("failureCode") or "")
                message, transient = failure_message(code, str(task.get("failure") or "").strip())
                raise ProviderError(self.name, message, code="PROVIDER_TASK_FAILED", transient=transient)
            elif status == "CANCELLED":
                raise ProviderError(self.name, f"the task {task_id} was cancelled at Runway")
            if time.monotonic() > deadline:
                raise ProviderError(self.name, f"the task {task_id} did not finish within {self.max_wait / 60:g} minutes", transient=True)
            await asyncio.sleep(self.settings.poll_interval)

    # -- cancel and key check ----------------------------------------------------------------

    async def cancel_remote(self, remote_id: str) -> None:
        """Cancel (or, once finished, delete) the task: `DELETE /v1/tasks/{id}`."""
        async with self._client() as client:

            async def attempt() -> None:
                response = await send(client, "DELETE", f"/v1/tasks/{remote_id}")
                if response.status_code not in (200, 202, 204, 404):
                    raise self._explain(response, f"cancelling task {remote_id}")

            await with_retries(attempt, ctx=None, provider=self.name, label=LABEL, what=f"cancelling task {remote_id}", policy=self.policy)

    def check_key(self, timeout: float = 5.0) -> tuple[bool | None, str | None]:
        """Whether Runway accepts the secret and has credits for a video, from `GET /v1/organization`."""
        response = httpx.get(f"{self.base_url}/v1/organization", headers=self._headers(), timeout=timeout)
        if response.status_code == 401:
            return False, "Runway rejected the API secret (401)"
        if not response.is_success:
            return None, f"Runway answered {response.status_code}"
        try:
            balance = response.json().get("creditBalance")
        except (ValueError, AttributeError):
            return True, None
        needed = RUNWAY_CREDITS_PER_SECOND.get(self.model, 5) * 5
        if isinstance(balance, (int, float)) and balance < needed:
            return False, f"Runway has {balance:g} credits left; a 5 s {self.model} video needs {needed}"
        return True, None

"""A fake Runway API, after https://docs.dev.runwayml.com/api/ (version 2024-11-06).

- Every request needs `Authorization: Bearer <secret>` (401 otherwise) and a valid
  `X-Runway-Version` header (400 otherwise). Errors are `{"error": ...}`; a body that fails
  validation gets 400 `{"error": "Validation of body failed", "issues": [...], "docUrl"}`.
- `POST /v1/image_to_video` `{model, promptImage, ratio, duration, promptText, seed,
  contentModeration}`: `promptImage` an HTTPS URL or a data URI of at most 5 MB that decodes as
  an image with an aspect ratio between 0.5 and 2; `ratio` one of the model's; `promptText` at
  most 1000 UTF-16 code units; `seed` 0..4294967295. Per model, as the `runwayml` SDK's
  image_to_video_create_params.py has them: `gen4.5` (2-10 s, promptText required, 12 credits a
  second), `gen4_turbo` (5 or 10 s here, 5 credits a second), `veo3.1` and `veo3.1_fast` (4, 6 or
  8 s, their own four ratios, no seed); with too few credits it answers 400 "You do not have
  enough credits to run this task.".
  Answers `{"id": <uuid>}`.
- `GET /v1/tasks/{id}`: `{id, status, createdAt}` plus `progress` (RUNNING), `output`
  (SUCCEEDED: a list of URLs) or `failure`, `failureCode` (FAILED). Each poll moves the task one
  step along its plan: PENDING -> RUNNING (progress) -> SUCCEEDED; THROTTLED first for a
  "throttled" task; FAILED for a "fail:<CODE>" task; a "hold" task stays RUNNING until
  `release()`.
  With `task_seconds` set, a task that is to succeed follows the clock instead of the polls: it
  is RUNNING (progress = the share of `task_seconds` gone by) until `task_seconds` after its
  creation, then SUCCEEDED, however often it is polled: a fixed latency, for benchmarks.
- `DELETE /v1/tasks/{id}`: 204; a running task is CANCELLED, a finished one is deleted (404 after).
- `GET /v1/organization`: `{creditBalance, tier, usage}` (what the key check asks).
- Outputs (MP4s at the task's ratio and duration) are served at `/outputs/...` without auth,
  as Runway's CDN does; the "output_gone" outcome answers 403 like an expired signed link.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from PIL import Image, UnidentifiedImageError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .base import FakeServer, Reply
from .media import mp4_video

API_VERSIONS = {"2024-11-06"}
DOC_URL = "https://docs.dev.runwayml.com/api"
GEN4_RATIOS = ["1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672"]
VEO_RATIOS = ["1280:720", "720:1280", "1080:1920", "1920:1080"]
MODEL_RATIOS = {"gen4.5": GEN4_RATIOS, "gen4_turbo": GEN4_RATIOS, "veo3.1": VEO_RATIOS, "veo3.1_fast": VEO_RATIOS}
#: The durations each model takes (seconds).
MODEL_DURATIONS = {"gen4.5": range(2, 11), "gen4_turbo": (5, 10), "veo3.1": (4, 6, 8), "veo3.1_fast": (4, 6, 8)}
#: Fields a model does not take: Veo has no seed.
NOT_TAKEN = {"veo3.1": {"seed"}, "veo3.1_fast": {"seed"}}
#: Credits a second: gen4.5 and gen4_turbo as promptreel's catalog has them; the Veo figures are the fake's own (unverified).
CREDITS_PER_SECOND = {"gen4.5": 12, "gen4_turbo": 5, "veo3.1": 40, "veo3.1_fast": 15}
KNOWN_FIELDS = {"model", "promptImage", "ratio", "duration", "promptText", "seed", "contentModeration"}
MAX_DATA_URI = 5 * 1024 * 1024
DATA_URI = re.compile(r"^data:(image/(?:jpeg|png|webp));base64,(.*)$", re.DOTALL)


def runway_error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error": message}, headers or {})


def too_many_requests(retry_after: float | None = 1) -> Reply:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    return runway_error(429, "You have exceeded the rate limit for this API. Please try again later.", headers)


def shedding_load(status: int = 503) -> Reply:
    return runway_error(status, "Service is temporarily unavailable; please retry.")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Task:
    id: str
    body: dict[str, Any]
    outcome: str  # succeed | throttled | hold | fail:<CODE> | output_gone | output_not_video
    plan: list[tuple[str, float | None]]
    step: int = -1
    created_at: str = field(default_factory=now)
    cancelled: bool = False
    released: threading.Event = field(default_factory=threading.Event)
    #: A timed task: SUCCEEDED this many seconds after `started` (time.monotonic()), whatever the polls.
    seconds: float | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed_share(self) -> float:
        """A timed task's share of its time gone by, 0 to 1."""
        assert self.seconds is not None
        return min(1.0, (time.monotonic() - self.started) / self.seconds) if self.seconds > 0 else 1.0

    @property
    def status(self) -> str:
        if self.cancelled:
            return "CANCELLED"
        return self.plan[max(0, self.step)][0]


def plan_for(outcome: str) -> list[tuple[str, float | None]]:
    if outcome == "throttled":
        return [("THROTTLED", None), ("THROTTLED", None), ("PENDING", None), ("RUNNING", 0.5), ("SUCCEEDED", None)]
    if outcome.startswith("fail:"):
        return [("PENDING", None), ("RUNNING", 0.4), ("FAILED", None)]
    if outcome == "hold":
        return [("PENDING", None), ("RUNNING", 0.3), ("RUNNING", 0.9), ("SUCCEEDED", None)]
    return [("PENDING", None), ("RUNNING", 0.25), ("RUNNING", 0.75), ("SUCCEEDED", None)]


#: A timed task's plan: its progress comes from the clock (None here).
TIMED_PLAN: list[tuple[str, float | None]] = [("RUNNING", None), ("SUCCEEDED", None)]


FAILURES = {
    "SAFETY.INPUT.IMAGE": "Your input image was flagged by our content moderation system.",
    "SAFETY.INPUT.TEXT": "Your prompt text was flagged by our content moderation system.",
    "SAFETY.OUTPUT.VIDEO": "The generated video was flagged by our content moderation system.",
    "INTERNAL.BAD_OUTPUT.CODE01": "The output did not pass our quality checks.",
    "ASSET.INVALID": "The input asset could not be processed.",
    "INTERNAL": "An unexpected error occurred.",
}


class FakeRunway(FakeServer):
    label = "Runway"

    def __init__(self, key: str = "key_fake_runway_secret", credits: int = 10_000, task_seconds: float | None = None):
        super().__init__(key)
        self.credits = credits
        #: When set, a task that succeeds takes this many seconds from its creation to SUCCEEDED,
        #: whatever the number of polls (None: one step of its plan per poll).
        self.task_seconds = task_seconds
        self.tasks: dict[str, Task] = {}
        self.deleted: set[str] = set()
        #: Outcomes given to the next tasks, in order; then "succeed".
        self.outcomes: list[str] = []
        self.outputs: dict[str, bytes] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/v1/image_to_video", self.create, methods=["POST"]),
            Route("/v1/tasks/{id}", self.get, methods=["GET"]),
            Route("/v1/tasks/{id}", self.delete, methods=["DELETE"]),
            Route("/v1/organization", self.organization, methods=["GET"]),
            Route("/outputs/{name}", self.output, methods=["GET"]),
        ]

    def release(self, task_id: str | None = None) -> None:
        """Let held tasks (all, or one) carry on at their next poll."""
        for task in list(self.tasks.values()):
            if task_id in (None, task.id):
                task.released.set()

    def _check_headers(self, request: Request) -> Response | None:
        if not self.bearer_ok(request):
            return runway_error(401, "Incorrect API secret or API secret not provided.").response()
        version = request.headers.get("x-runway-version")
        if not version:
            return runway_error(
                400, "The X-Runway-Version header is required. Set it to a supported API version, e.g. 2024-11-06."
            ).response()
        if version not in API_VERSIONS:
            return runway_error(400, f"Unsupported API version {version!r} in the X-Runway-Version header.").response()
        return None

    async def organization(self, request: Request) -> Response:
        if (denied := self._check_headers(request)) is not None:
            return denied
        if (reply := await self.scripted("organization")) is not None:
            return reply
        return JSONResponse(
            {
                "creditBalance": self.credits,
                "tier": {
                    "maxMonthlyCreditSpend": 10000,
                    "models": {model: {"maxConcurrentGenerations": 2, "maxDailyGenerations": 200} for model in MODEL_RATIOS},
                },
                "usage": {
                    "models": {
                        model: {"dailyGenerations": sum(1 for t in self.tasks.values() if t.body.get("model") == model)}
                        for model in MODEL_RATIOS
                    }
                },
            }
        )

    async def create(self, request: Request) -> Response:
        if (denied := self._check_headers(request)) is not None:
            return denied
        if (reply := await self.scripted("create")) is not None:
            return reply
        try:
            body = await request.json()
        except ValueError:
            return runway_error(400, "Invalid JSON body.").response()
        if not isinstance(body, dict):
            return runway_error(400, "Validation of body failed").response()
        issues = validate_body(body)
        if issues:
            return JSONResponse({"error": "Validation of body failed", "issues": issues, "docUrl": DOC_URL}, 400)
        cost = CREDITS_PER_SECOND[body["model"]] * body.get("duration", 10)
        if self.credits < cost:
            return runway_error(400, "You do not have enough credits to run this task.").response()
        self.credits -= cost
        outcome = self.outcomes.pop(0) if self.outcomes else "succeed"
        if outcome == "succeed" and self.task_seconds is not None:
            task = Task(str(uuid.uuid4()), body, outcome, TIMED_PLAN, seconds=self.task_seconds)
        else:
            task = Task(str(uuid.uuid4()), body, outcome, plan_for(outcome))
        self.tasks[task.id] = task
        self.notify()
        return JSONResponse({"id": task.id})

    async def get(self, request: Request) -> Response:
        if (denied := self._check_headers(request)) is not None:
            return denied
        if (reply := await self.scripted("poll")) is not None:
            return reply
        task = self.tasks.get(request.path_params["id"])
        if task is None or task.id in self.deleted:
            return runway_error(404, "Task not found.").response()
        self._advance(task)
        self.notify()
        return JSONResponse(self._public(task))

    def _advance(self, task: Task) -> None:
        if task.cancelled or task.status in ("SUCCEEDED", "FAILED"):
            return
        if task.seconds is not None:
            task.step = 1 if task.elapsed_share >= 1.0 else 0
            return
        if task.outcome == "hold" and task.step >= 1 and not task.released.is_set():
            return  # stays RUNNING at its first progress until released
        task.step = min(task.step + 1, len(task.plan) - 1)

    def _public(self, task: Task) -> dict[str, Any]:
        data: dict[str, Any] = {"id": task.id, "status": task.status, "createdAt": task.created_at}
        status, progress = task.plan[max(0, task.step)]
        if status == "RUNNING" and not task.cancelled:
            data["progress"] = progress if progress is not None else round(task.elapsed_share, 3)
        if task.status == "SUCCEEDED":
            name = f"{task.id}.mp4"
            if name not in self.outputs:
                width, height = (int(part) for part in task.body["ratio"].split(":"))
                self.outputs[name] = (
                    b"<html>AccessDenied</html>"
                    if task.outcome == "output_not_video"
                    else mp4_video(width, height, int(task.body.get("duration", 10)))
                )
            data["output"] = [f"{self.files_url}/outputs/{name}?_jwt=fake.signed.token"]
        if task.status == "FAILED":
            code = task.outcome.partition(":")[2]
            data["failure"] = FAILURES.get(code, "The task failed.")
            data["failureCode"] = code
        return data

    async def delete(self, request: Request) -> Response:
        if (denied := self._check_headers(request)) is not None:
            return denied
        if (reply := await self.scripted("delete")) is not None:
            return reply
        task = self.tasks.get(request.path_params["id"])
        if task is None or task.id in self.deleted:
            return runway_error(404, "Task not found.").response()
        if task.status in ("SUCCEEDED", "FAILED", "CANCELLED"):
            self.deleted.add(task.id)
        else:
            task.cancelled = True
        self.notify()
        return Response(status_code=204)

    async def output(self, request: Request) -> Response:
        if (reply := await self.scripted("output")) is not None:
            return reply
        name = request.path_params["name"]
        task = self.tasks.get(name.removesuffix(".mp4"))
        if name not in self.outputs or (task and task.outcome == "output_gone"):
            return Response(
                '<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>',
                403,
                media_type="application/xml",
            )
        media_type = "text/html" if task and task.outcome == "output_not_video" else "video/mp4"
        return Response(self.outputs[name], media_type=media_type)


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def validate_body(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Issues in the shape Runway's validator (zod) reports them."""
    issues: list[dict[str, Any]] = []

    def issue(path: str, code: str, message: str, **extra: Any) -> None:
        issues.append({"code": code, "path": [path], "message": message, **extra})

    unknown = [name for name in body if name not in KNOWN_FIELDS]
    if unknown:
        issues.append(
            {
                "code": "unrecognized_keys",
                "keys": unknown,
                "path": [],
                "message": f"Unrecognized key(s) in object: {', '.join(map(repr, unknown))}",
            }
        )
    model = body.get("model")
    if model not in MODEL_RATIOS:
        issue(
            "model", "invalid_union_discriminator", f"Invalid discriminator value. Expected {' | '.join(map(repr, MODEL_RATIOS))}"
        )
        return issues
    ratio = body.get("ratio")
    if ratio not in MODEL_RATIOS[model]:
        issue(
            "ratio",
            "invalid_enum_value",
            f"Invalid enum value. Expected {' | '.join(map(repr, MODEL_RATIOS[model]))}, received {ratio!r}",
        )
    allowed = MODEL_DURATIONS[model]
    duration = body.get("duration", 10 if 10 in allowed else max(allowed))
    if not isinstance(duration, int) or isinstance(duration, bool) or duration not in allowed:
        issue("duration", "invalid_enum_value", f"Invalid duration for {model}. Expected {' | '.join(map(str, allowed))}")
    for name in NOT_TAKEN.get(model, ()):
        if name in body:
            issue(name, "unrecognized_keys", f"Unrecognized key(s) in object: '{name}'")
    if model == "gen4.5" and "promptText" not in body:
        issue("promptText", "invalid_type", "Required")
    if "promptText" in body:
        text = body["promptText"]
        if not isinstance(text, str) or not text.strip():
            issue("promptText", "too_small", "String must contain at least 1 character(s)")
        elif utf16_length(text) > 1000:
            issue("promptText", "too_big", "String must contain at most 1000 character(s)", maximum=1000)
    if "seed" in body:
        seed = body["seed"]
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 4294967295:
            issue("seed", "invalid_type", "Expected an integer from 0 to 4294967295")
    image = body.get("promptImage")
    if isinstance(image, list):
        firsts = [item for item in image if isinstance(item, dict) and item.get("position") == "first"]
        image = firsts[0].get("uri") if firsts else None
    if not isinstance(image, str):
        issue("promptImage", "invalid_type", "Required")
    else:
        problem = image_problem(image)
        if problem:
            issue("promptImage", problem[0], problem[1])
    return issues


def image_problem(uri: str) -> tuple[str, str] | None:
    if uri.startswith(("https://", "runway://")):
        return None
    if uri.startswith("http://"):
        return "custom", "URLs must use HTTPS"
    match = DATA_URI.match(uri)
    if not match:
        return "custom", "Expected an HTTPS URL, a runway:// URI or a data URI of an image (image/jpeg, image/png, image/webp)"
    if len(uri) > MAX_DATA_URI:
        return "too_big", "Data URIs must be at most 5MB. Use a URL or an ephemeral upload for larger assets."
    try:
        data = base64.b64decode(match.group(2), validate=True)
        with Image.open(io.BytesIO(data)) as picture:
            picture.verify()
            width, height = picture.size
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        return "custom", "The data URI does not contain a valid image"
    if not 0.5 <= width / height <= 2.0:
        return "custom", f"The image's aspect ratio must be between 0.5 and 2 (got {width}x{height})"
    if width >= 8000 or height >= 8000:
        return "custom", "The image must be smaller than 8000 pixels on each side"
    return None

"""What a client may ask for: the generate request, validated strictly.

The REST API, the studio's form and the CLI all validate through these models, so each
refuses the same things with the same words.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

#: DALL-E 3's own prompt limit; the longest prompt any provider here accepts.
MAX_PROMPT_LENGTH = 4000
MAX_SEED = 2**32 - 1

ImageSize = Literal["1024x1024", "1792x1024", "1024x1792"]
IMAGE_SIZES: tuple[str, ...] = ("1024x1024", "1792x1024", "1024x1792")
#: The durations of the default video models; a chosen model may allow others (its catalog entry).
DURATIONS: tuple[int, ...] = (5, 10)
QUALITIES: tuple[str, ...] = ("standard", "high")
# The prompt validator's reasons, which describe() turns into sentences.
PROMPT_BLANK = "the prompt is only whitespace"
PROMPT_NUL = "the prompt contains a NUL character"
#: The `provider` of a job that animates the user's own picture (`settings.sourceImage`).
UPLOAD_PROVIDER: Final = "upload"
#: The motion prompt of a job that animates the user's picture and names none.
DEFAULT_MOTION_PROMPT = "Gentle, natural motion; a slow camera push in."
#: Beyond the guide's two: GPT image models' own levels, for the models whose catalog entry maps them.
MODEL_QUALITIES: tuple[str, ...] = ("low", "medium")
#: The image providers a client may name: the catalog's, and the guide's names for two of them.
IMAGE_PROVIDER_NAMES: tuple[str, ...] = ("openai", "replicate", "local", "dalle3", "flux1", "comfyui")
#: What a webhook may be told (docs/api.md#webhooks); without `webhookEvents`, the endings.
WebhookEvent = Literal["started", "progress", "completed", "failed", "cancelled"]
DEFAULT_WEBHOOK_EVENTS: tuple[str, ...] = ("completed", "failed", "cancelled")
MAX_WEBHOOK_URL_LENGTH = 2048
WEBHOOK_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]"
#: The schema's words for what the validator `_events_need_a_webhook` says: webhookEvents needs a webhook.
WEBHOOK_EVENTS_NEED_A_WEBHOOK: dict[str, Any] = {
    "webhookEvents": {"required": ["webhook"], "properties": {"webhook": {"type": "string"}}}
}


def webhook_field() -> Any:
    """The `webhook` field of the requests that take one."""
    return Field(
        None,
        min_length=1,
        max_length=MAX_WEBHOOK_URL_LENGTH,
        # Documented for clients (and Schemathesis); the validator says what is wrong in words.
        json_schema_extra={"format": "uri", "pattern": WEBHOOK_URL_PATTERN},
    )


class GenerateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    imageSize: ImageSize = "1024x1024"
    #: Checked against the chosen video model's durations when the job is created (JobService).
    videoDuration: int = Field(5, ge=1, le=60)
    quality: Literal["standard", "high", "low", "medium"] = "standard"
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    videoProvider: Literal["runway", "replicate", "local", "comfyui"] | None = None
    #: Catalog model ids (GET /api/v1/models); None: the provider's default.
    imageModel: str | None = Field(None, min_length=1, max_length=128)
    videoModel: str | None = Field(None, min_length=1, max_length=128)
    #: An upload's id (POST /api/v1/uploads): animate the user's picture instead of generating one.
    sourceImage: str | None = Field(None, pattern=r"^upl_[A-Za-z0-9_-]{8,40}$")
    #: How the picture meets imageSize: a centre crop, or the whole picture on a blurred fill of itself.
    fit: Literal["crop", "contain"] = "crop"
    #: Stop after the image (no video step, image cost only); POST /api/v1/jobs/{id}/animate adds a video later.
    imageOnly: bool = False


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"dependentSchemas": WEBHOOK_EVENTS_NEED_A_WEBHOOK})

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_LENGTH)
    #: `upload` (or left out) with `settings.sourceImage`: no image provider, the user's picture.
    provider: Literal["openai", "replicate", "local", "dalle3", "flux1", "comfyui", "upload"]
    settings: GenerateSettings = Field(default_factory=GenerateSettings)
    #: POSTed the job's events (backend/webhooks/); its address is checked again by JobService.
    webhook: str | None = webhook_field()
    webhookEvents: list[WebhookEvent] | None = Field(None, min_length=1, max_length=5)

    @model_validator(mode="before")
    @classmethod
    def _upload_needs_no_provider(cls, data: Any) -> Any:
        """With `settings.sourceImage` the provider may be left out (it is `upload`), and so may
        the prompt: it only says how the picture moves, and the video providers take a default."""
        if not isinstance(data, dict):
            return data
        settings = data.get("settings")
        if not isinstance(settings, dict) or settings.get("sourceImage") is None:
            return data
        if "provider" not in data:
            data = {**data, "provider": UPLOAD_PROVIDER}
        if data.get("prompt") is None or data.get("prompt") == "":
            data = {**data, "prompt": DEFAULT_MOTION_PROMPT}
        return data

    @field_validator("prompt")
    @classmethod
    def _prompt_has_words(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(PROMPT_BLANK)
        if "\x00" in value:  # PostgreSQL cannot store it (a 500 before)
            raise ValueError(PROMPT_NUL)
        return value.strip()

    @field_validator("webhook")
    @classmethod
    def _webhook_is_http(cls, value: str | None) -> str | None:
        if value is not None:
            scheme, _, rest = value.partition("://")
            if scheme.lower() not in ("http", "https") or not rest or rest[0] in "/?#":
                raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("webhookEvents")
    @classmethod
    def _events_need_a_webhook(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is not None and info.data.get("webhook") is None:
            raise ValueError("is given without a webhook")
        return value


def field_name(location: tuple[Any, ...]) -> str:
    """'settings.videoDuration' from pydantic's ('body', 'settings', 'videoDuration'); a batch's
    item keeps its position: 'jobs[3].prompt' from ('body', 'jobs', 3, 'prompt')."""
    if location and location[0] in ("body", "query", "path", "header"):
        location = location[1:]
    parts: list[str] = []
    for part in location:
        if isinstance(part, int):  # list positions say nothing to a user, but which job of a batch does
            if parts == [BATCH_JOBS_FIELD]:
                parts[-1] += f"[{part}]"
            continue
        parts.append(str(part))
    return ".".join(parts) or "body"


#: The list of job requests of a batch (BatchListRequest.jobs).
BATCH_JOBS_FIELD = "jobs"


#: What a person reads for a bad value of each field, whatever pydantic's reason (a wrong type,
#: out of range, not one of the choices): the studio shows it at the field, the API in `error`.
FIELD_SENTENCES: dict[str, str] = {
    "provider": "Choose an image provider: openai, replicate or local (dalle3 and flux1 are their guide names).",
    "settings": (
        "The settings are an object with imageSize, videoDuration, quality, seed, videoProvider, imageModel, videoModel,"
        " sourceImage, fit and imageOnly."
    ),
    "settings.imageSize": "The image size is 1024x1024, 1792x1024 or 1024x1792.",
    "settings.videoDuration": (
        "The video length is a whole number of seconds that the video model allows (5 or 10 with the defaults)."
    ),
    "settings.quality": "The quality is standard or high (low and medium for GPT image models).",
    "settings.seed": f"The seed is a whole number from 0 to {MAX_SEED:,}.",
    "settings.videoProvider": "Choose a video provider: runway, replicate or local.",
}
EMPTY_PROMPT = "Describe a scene first."
BLANK_PROMPT = "The prompt is only spaces; describe a scene in words."


def _prompt_sentence(error: Mapping[str, Any]) -> str:
    kind = error.get("type")
    if kind in ("missing", "string_too_short"):
        return EMPTY_PROMPT
    if kind == "string_too_long":
        return f"The prompt is too long: at most {MAX_PROMPT_LENGTH:,} characters."
    if kind == "string_type":
        return "The prompt is text, in quotes."
    reason = str((error.get("ctx") or {}).get("error", ""))
    if reason == PROMPT_BLANK:
        return BLANK_PROMPT
    if reason == PROMPT_NUL:
        return "The prompt contains a NUL character; remove it."
    return f"prompt: {error.get('msg', 'invalid value')}"


def describe(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """The first problem as one short sentence for a person, and the field it is about."""
    first = errors[0]
    field = field_name(tuple(first.get("loc", ())))
    kind = first.get("type")
    if kind == "json_invalid":
        return "The request body is not valid JSON.", "body"
    if kind == "extra_forbidden":
        return f"Unknown field '{field}': remove it.", field
    item, _, inner = field.partition("].")
    if field.startswith(f"{BATCH_JOBS_FIELD}[") and inner:  # a batch's job: the sentence of its field, saying which
        inner_sentence, _ = describe([{**first, "loc": tuple(inner.split("."))}])
        return f"{item}]: {inner_sentence}", field
    if field == "prompt":
        return _prompt_sentence(first), field
    if field in FIELD_SENTENCES:
        return FIELD_SENTENCES[field], field
    if field == "body" and kind in ("model_type", "model_attributes_type", "dict_type"):
        return "The request body is a JSON object.", field
    message = "this field is required" if kind == "missing" else first.get("msg", "invalid value")
    return f"{field}: {message}", field


def validate_request(data: dict[str, Any]) -> GenerateRequest:
    """Parse python data the way the API parses JSON (used by the studio and the CLI)."""
    return GenerateRequest.model_validate_json(json.dumps(data))


#: Variants per batch of one request (`count`), and jobs per batch of a list.
MIN_VARIANTS, MAX_VARIANTS = 2, 8
MAX_BATCH_JOBS = 50


class VariantsRequest(GenerateRequest):
    """A batch of `count` variants of one request (POST /api/v1/batches): seeds s, s+1, ... from
    `settings.seed`, or distinct random ones without it."""

    count: int = Field(ge=MIN_VARIANTS, le=MAX_VARIANTS)

    def requests(self) -> list[GenerateRequest]:
        """The one request each job runs (its seed is chosen by JobService)."""
        single = GenerateRequest.model_validate(self.model_dump(exclude={"count"}))
        return [single] * self.count


class BatchListRequest(BaseModel):
    """A batch of up to MAX_BATCH_JOBS requests; `webhook`/`webhookEvents` apply to every job that names none."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"dependentSchemas": WEBHOOK_EVENTS_NEED_A_WEBHOOK})

    jobs: list[GenerateRequest] = Field(min_length=1, max_length=MAX_BATCH_JOBS)
    webhook: str | None = webhook_field()
    webhookEvents: list[WebhookEvent] | None = Field(None, min_length=1, max_length=5)

    _webhook_is_http = field_validator("webhook")(GenerateRequest._webhook_is_http.__func__)  # type: ignore[attr-defined]
    _events_need_a_webhook = field_validator("webhookEvents")(GenerateRequest._events_need_a_webhook.__func__)  # type: ignore[attr-defined]

    def requests(self) -> list[GenerateRequest]:
        if self.webhook is None:
            return list(self.jobs)
        shared = {"webhook": self.webhook, "webhookEvents": self.webhookEvents}
        return [job if job.webhook is not None else job.model_copy(update=shared) for job in self.jobs]


BatchRequest = VariantsRequest | BatchListRequest


class AnimateSettings(BaseModel):
    """The video settings of POST /api/v1/jobs/{id}/animate; each left out is the image-only job's own."""

    model_config = ConfigDict(extra="forbid", strict=True)

    videoDuration: int | None = Field(None, ge=1, le=60)
    videoProvider: Literal["runway", "replicate", "local", "comfyui"] | None = None
    videoModel: str | None = Field(None, min_length=1, max_length=128)


class AnimateRequest(BaseModel):
    """POST /api/v1/jobs/{id}/animate: a new job that animates a finished image-only job's image."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"dependentSchemas": WEBHOOK_EVENTS_NEED_A_WEBHOOK})

    #: How the picture moves; left out: the image-only job's prompt.
    prompt: str | None = Field(None, min_length=1, max_length=MAX_PROMPT_LENGTH)
    settings: AnimateSettings = Field(default_factory=AnimateSettings)
    webhook: str | None = webhook_field()
    webhookEvents: list[WebhookEvent] | None = Field(None, min_length=1, max_length=5)

    @field_validator("prompt")
    @classmethod
    def _prompt_has_words(cls, value: str | None) -> str | None:
        return None if value is None else GenerateRequest._prompt_has_words(value)

    _webhook_is_http = field_validator("webhook")(GenerateRequest._webhook_is_http.__func__)  # type: ignore[attr-defined]
    _events_need_a_webhook = field_validator("webhookEvents")(GenerateRequest._events_need_a_webhook.__func__)  # type: ignore[attr-defined]

"""What a client may ask for: the generate request, validated strictly.

The REST API, the studio's form and the CLI all validate through these models, so each
refuses the same things with the same words.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

#: DALL-E 3's own prompt limit; the longest prompt any provider here accepts.
MAX_PROMPT_LENGTH = 4000
MAX_SEED = 2**32 - 1

ImageSize = Literal["1024x1024", "1792x1024", "1024x1792"]
IMAGE_SIZES: tuple[str, ...] = ("1024x1024", "1792x1024", "1024x1792")
DURATIONS: tuple[int, ...] = (5, 10)
QUALITIES: tuple[str, ...] = ("standard", "high")
#: What a webhook may be told (docs/api.md#webhooks); without `webhookEvents`, the endings.
WebhookEvent = Literal["started", "progress", "completed", "failed", "cancelled"]
DEFAULT_WEBHOOK_EVENTS: tuple[str, ...] = ("completed", "failed", "cancelled")
MAX_WEBHOOK_URL_LENGTH = 2048
WEBHOOK_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]"
#: The schema's words for what the validator `_events_need_a_webhook` says: webhookEvents needs a webhook.
WEBHOOK_EVENTS_NEED_A_WEBHOOK = {"webhookEvents": {"required": ["webhook"], "properties": {"webhook": {"type": "string"}}}}


class GenerateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    imageSize: ImageSize = "1024x1024"
    videoDuration: Literal[5, 10] = 5
    quality: Literal["standard", "high"] = "standard"
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    videoProvider: Literal["runway", "local"] | None = None


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"dependentSchemas": WEBHOOK_EVENTS_NEED_A_WEBHOOK})

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_LENGTH)
    provider: Literal["dalle3", "flux1", "local"]
    settings: GenerateSettings = Field(default_factory=GenerateSettings)
    #: POSTed the job's events (backend/webhooks/); its address is checked again by JobService.
    webhook: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_WEBHOOK_URL_LENGTH,
        # Documented for clients (and Schemathesis); the validator below says what is wrong in words.
        json_schema_extra={"format": "uri", "pattern": WEBHOOK_URL_PATTERN},
    )
    webhookEvents: list[WebhookEvent] | None = Field(None, min_length=1, max_length=5)

    @field_validator("prompt")
    @classmethod
    def _prompt_has_words(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt is empty")
        if "\x00" in value:  # PostgreSQL cannot store it (a 500 before)
            raise ValueError("the prompt contains a NUL character")
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
    """'settings.videoDuration' from pydantic's ('body', 'settings', 'videoDuration')."""
    if location and location[0] in ("body", "query", "path", "header"):
        location = location[1:]
    parts = [str(part) for part in location if not isinstance(part, int)]  # list positions say nothing to a user
    return ".".join(parts) or "body"


def describe(errors: list[dict[str, Any]]) -> tuple[str, str]:
    """The first problem as one readable sentence, and the field it is about."""
    first = errors[0]
    field = field_name(tuple(first.get("loc", ())))
    message = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    elif first.get("type") == "json_invalid":
        return "The request body is not valid JSON.", "body"
    elif first.get("type") == "missing":
        message = "this field is required"
    return f"{field}: {message}", field


def validate_request(data: dict[str, Any]) -> GenerateRequest:
    """Parse python data the way the API parses JSON (used by the studio and the CLI)."""
    return GenerateRequest.model_validate_json(json.dumps(data))

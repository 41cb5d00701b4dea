"""What a client may ask for: the generate request, validated strictly.

The REST API, the studio's form and the CLI all validate through these models, so each
refuses the same things with the same words.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: DALL-E 3's own prompt limit; the longest prompt any provider here accepts.
MAX_PROMPT_LENGTH = 4000
MAX_SEED = 2**32 - 1

ImageSize = Literal["1024x1024", "1792x1024", "1024x1792"]
IMAGE_SIZES: tuple[str, ...] = ("1024x1024", "1792x1024", "1024x1792")
#: The durations of the default video models; a chosen model may allow others (its catalog entry).
DURATIONS: tuple[int, ...] = (5, 10)
QUALITIES: tuple[str, ...] = ("standard", "high")
#: Beyond the guide's two: GPT image models' own levels, for the models whose catalog entry maps them.
MODEL_QUALITIES: tuple[str, ...] = ("low", "medium")
#: The image providers a client may name: the catalog's, and the guide's names for two of them.
IMAGE_PROVIDER_NAMES: tuple[str, ...] = ("openai", "replicate", "local", "dalle3", "flux1", "comfyui")


class GenerateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    imageSize: ImageSize = "1024x1024"
    #: Checked against the chosen video model's durations when the job is created (JobService).
    videoDuration: int = Field(5, ge=1, le=60)
    quality: Literal["standard", "high", "low", "medium"] = "standard"
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    videoProvider: Literal["runway", "local", "comfyui"] | None = None
    #: Catalog model ids (GET /api/v1/models); None: the provider's default.
    imageModel: str | None = Field(None, min_length=1, max_length=128)
    videoModel: str | None = Field(None, min_length=1, max_length=128)


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_LENGTH)
    provider: Literal["openai", "replicate", "local", "dalle3", "flux1", "comfyui"]
    settings: GenerateSettings = Field(default_factory=GenerateSettings)

    @field_validator("prompt")
    @classmethod
    def _prompt_has_words(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt is empty")
        if "\x00" in value:  # PostgreSQL cannot store it (a 500 before)
            raise ValueError("the prompt contains a NUL character")
        return value.strip()


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

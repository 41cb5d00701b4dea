"""What each model costs, in USD, from the price rules of the model catalog (models.toml).

Every price in the catalog names its source and the date it was read. A model without a price
is refused before a job is made (UnknownPrice), rather than guessing what the user pays.
"""

from __future__ import annotations

from typing import Any

from backend.providers.catalog import ModelEntry, active

#: Runway bills in credits; one credit is $0.01 (https://docs.dev.runwayml.com/guides/pricing/).
RUNWAY_USD_PER_CREDIT = 0.01


class UnknownPrice(LookupError):
    """No published price for this model: refuse rather than guess what the user pays."""


def _entry(provider: str, model: str, kind: str) -> ModelEntry:
    entry = active().get(model)
    if entry is None or entry.kind != kind:
        raise UnknownPrice(f"no {kind} model {model!r} in the model catalog")
    if entry.price is None:
        raise UnknownPrice(f"no price for {provider} model {model!r} in the model catalog")
    return entry


def per_image(entry: ModelEntry, size: str, quality: str) -> float:
    """The catalog's per-image figure for a size and quality (the estimate for token-priced models)."""
    assert entry.price is not None
    table = entry.price.perImage or {}
    row = table.get(entry.provider_quality(quality)) or table.get("*")
    price = None if row is None else row.get(size, row.get("*"))
    if price is None:
        raise UnknownPrice(f"no price for {entry.id} at quality {quality!r} and size {size}")
    return price


def usage_cost(entry: ModelEntry, usage: dict[str, Any]) -> float:
    """What an answer's `usage` costs at the catalog's per-token prices (USD per million tokens).

    OpenAI's `usage`: input_tokens_details {text_tokens, image_tokens}, output_tokens and, when
    given, output_tokens_details {image_tokens, text_tokens}; output text tokens are few and
    are priced as image output here (the catalog has no separate price for them)."""
    assert entry.price is not None and entry.price.tokens is not None
    prices = entry.price.tokens
    details = usage.get("input_tokens_details") or {}
    text_in = _count(details.get("text_tokens"))
    image_in = _count(details.get("image_tokens"))
    if not details:
        text_in = _count(usage.get("input_tokens"))
    output = _count(usage.get("output_tokens"))
    cost = (text_in * prices.textInput + image_in * prices.imageInput + output * prices.imageOutput) / 1_000_000
    return round(cost, 6)


def _count(value: Any) -> int:
    """A token count from a provider's answer; anything but a whole number >= 0 is refused."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a token count: {value!r}")
    return value


def image_cost(provider: str, model: str, size: str, quality: str, usage: dict[str, Any] | None = None) -> float:
    """An image's cost: from `usage` for token-priced models when the answer had a readable one,
    else the per-image table (an unreadable usage is not taken as free)."""
    if provider == "upload":  # the user's own picture, taken as it is
        return 0.0
    entry = _entry(provider, model, "image")
    assert entry.price is not None
    if entry.price.unit == "token" and usage:
        try:
            return usage_cost(entry, usage)
        except (AttributeError, TypeError, ValueError):
            pass
    return per_image(entry, size, quality)


def video_cost(provider: str, model: str, duration: int) -> float:
    entry = _entry(provider, model, "video")
    assert entry.price is not None
    if entry.price.unit != "second" or entry.price.usdPerSecond is None:
        raise UnknownPrice(f"the price of video model {model!r} is not per second")
    return round(entry.price.usdPerSecond * duration, 4)


def estimate(
    provider: str, image_model: str, video_provider: str, video_model: str, size: str, quality: str, duration: int
) -> dict[str, float]:
    """The cost of a whole job before it runs, in the guide's `cost` shape."""
    image = image_cost(provider, image_model, size, quality)
    video = video_cost(video_provider, video_model, duration)
    return {"imageGeneration": image, "videoGeneration": video, "total": round(image + video, 4)}

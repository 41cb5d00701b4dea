"""What each provider charges, in USD: the one place costs come from.

Every figure names its public source. Prices change: update the figure and its source together.
"""

from __future__ import annotations

from typing import Literal

# DALL-E 3, per image, by quality and size.
# Source: https://openai.com/api/pricing/ ("DALL·E 3: Standard 1024×1024 $0.040, 1024×1792 and
# 1792×1024 $0.080; HD 1024×1024 $0.080, 1024×1792 and 1792×1024 $0.120").
DALLE3_PRICES: dict[tuple[str, str], float] = {
    ("standard", "1024x1024"): 0.040,
    ("standard", "1792x1024"): 0.080,
    ("standard", "1024x1792"): 0.080,
    ("hd", "1024x1024"): 0.080,
    ("hd", "1792x1024"): 0.120,
    ("hd", "1024x1792"): 0.120,
}

# FLUX.1 on Replicate, per output image, whatever the aspect ratio.
# Source: https://replicate.com/black-forest-labs/flux-schnell ("$0.003 per output image") and
# https://replicate.com/black-forest-labs/flux-1.1-pro ("$0.04 per output image"),
# https://replicate.com/black-forest-labs/flux-dev ("$0.025 per output image"),
# https://replicate.com/black-forest-labs/flux-pro ("$0.055 per output image").
FLUX_PRICES: dict[str, float] = {
    "black-forest-labs/flux-schnell": 0.003,
    "black-forest-labs/flux-dev": 0.025,
    "black-forest-labs/flux-pro": 0.055,
    "black-forest-labs/flux-1.1-pro": 0.04,
}

# Runway image-to-video, in credits per second of output; one credit is $0.01.
# Source: https://docs.dev.runwayml.com/guides/pricing/ ("gen4_turbo: 5 credits per second",
# "gen3a_turbo: 5 credits per second"; "Credits ... $0.01 per credit").
RUNWAY_CREDITS_PER_SECOND: dict[str, int] = {
    "gen4_turbo": 5,
    "gen3a_turbo": 5,
}
RUNWAY_USD_PER_CREDIT = 0.01

#: DALL-E's own names for the two qualities this project offers.
DALLE3_QUALITY: dict[str, Literal["standard", "hd"]] = {"standard": "standard", "high": "hd"}


class UnknownPrice(LookupError):
    """No published price for this model: refuse rather than guess what the user pays."""


def image_cost(provider: str, model: str, size: str, quality: str) -> float:
    if provider in ("local", "upload"):  # upload: the user's own picture, taken as it is
        return 0.0
    if provider == "dalle3":
        key = (DALLE3_QUALITY.get(quality, quality), size)
        if key not in DALLE3_PRICES:
            raise UnknownPrice(f"no DALL-E 3 price for quality {quality!r} at {size}")
        return DALLE3_PRICES[key]
    if provider == "flux1":
        if model not in FLUX_PRICES:
            raise UnknownPrice(f"no price for Replicate model {model!r}")
        return FLUX_PRICES[model]
    raise UnknownPrice(f"unknown image provider {provider!r}")


def video_cost(provider: str, model: str, duration: int) -> float:
    if provider == "local":
        return 0.0
    if provider == "runway":
        if model not in RUNWAY_CREDITS_PER_SECOND:
            raise UnknownPrice(f"no price for Runway model {model!r}")
        return round(RUNWAY_CREDITS_PER_SECOND[model] * duration * RUNWAY_USD_PER_CREDIT, 4)
    raise UnknownPrice(f"unknown video provider {provider!r}")


def estimate(
    provider: str, image_model: str, video_provider: str, video_model: str, size: str, quality: str, duration: int
) -> dict[str, float]:
    """The cost of a whole job before it runs, in the guide's `cost` shape."""
    image = image_cost(provider, image_model, size, quality)
    video = video_cost(video_provider, video_model, duration)
    return {"imageGeneration": image, "videoGeneration": video, "total": round(image + video, 4)}

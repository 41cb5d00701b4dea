"""Jobs as the tests submit and compare them: the body of a `local` job, its data without signatures."""

from __future__ import annotations

from typing import Any


def unsigned(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with its media URLs' signatures (query strings) cut off: they change with time."""
    return {key: value.split("?")[0] if key in ("image_url", "video_url") and value else value for key, value in data.items()}


def local_job(prompt: str = "A majestic mountain landscape at golden hour", **settings: Any) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "provider": "local",
        "settings": {"imageSize": "1024x1024", "videoDuration": 5, "quality": "standard", **settings},
    }

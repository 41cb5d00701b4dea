"""Words and numbers as the studio shows them: statuses, money, durations, times."""

from __future__ import annotations

from datetime import UTC, datetime

from backend.store import models
from backend.store.models import JobStatus

#: `backend.store.models`' groups of statuses as plain strings (what the public job data and the events carry).
UNFINISHED_STATUSES: tuple[str, ...] = tuple(status.value for status in models.UNFINISHED_STATUSES)  # queued or running
ACTIVE_STATUSES: tuple[str, ...] = tuple(status.value for status in models.ACTIVE_STATUSES)  # a step is running
FINISHED_STATUSES: tuple[str, ...] = tuple(status.value for status in models.FINISHED_STATUSES)  # final

STATUS_LABELS = {
    JobStatus.PENDING.value: "Queued",
    JobStatus.GENERATING_IMAGE.value: "Generating image",
    JobStatus.GENERATING_VIDEO.value: "Generating video",
    JobStatus.COMPLETED.value: "Completed",
    JobStatus.FAILED.value: "Failed",
    JobStatus.CANCELLED.value: "Cancelled",
}

STEP_STATUS_ICONS = {
    "pending": ("schedule", "grey-6"),
    "running": ("autorenew", "primary"),
    "completed": ("check_circle", "positive"),
    "failed": ("error", "negative"),
    "cancelled": ("block", "grey-7"),
}
STEP_TITLES = {"image_generation": "Image", "video_generation": "Video"}

PROVIDER_SHORT = {
    "dalle3": "OpenAI",
    "openai": "OpenAI",
    "flux1": "FLUX.1",
    "replicate": "Replicate",
    "runway": "Runway",
    "local": "Local",
    "upload": "Your picture",  # a job that animates the user's own picture (settings.sourceImage)
}


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status.replace("_", " ").capitalize())


def status_classes(status: str) -> str:
    running = " running" if status in ACTIVE_STATUSES else ""
    return f"pr-status pr-status-{status}{running}"


def money(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "$0.00"
    if value < 0.01:
        return f"${value:.3f}"
    return f"${value:.2f}" if round(value, 2) == round(value, 3) else f"${value:.3f}"


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value)  # Python 3.11+ reads the trailing Z


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def between(start: str | None, end: str | None) -> float | None:
    """Seconds from start to end (or to now when it has not ended)."""
    began = parse_time(start)
    if began is None:
        return None
    ended = parse_time(end) or datetime.now(UTC)
    return (ended - began).total_seconds()


def utc_time(value: str | None, with_date: bool = False) -> str:
    """A fallback text for a time; the browser replaces it with the viewer's local time."""
    moment = parse_time(value)
    if moment is None:
        return "—"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if with_date else "%H:%M:%S UTC")


def provider_name(name: str | None) -> str:
    return PROVIDER_SHORT.get(name or "", name or "—")


#: Under a local job whose prompt has words the local renderer cannot draw: where to go instead.
LOCAL_RENDERER_HINT = (
    "The local renderer draws landscapes, skies, weather and a few things (boats, lighthouses, castles, houses, "
    "balloons, birds, figures, cars). For other subjects choose OpenAI (GPT Image) or FLUX on Replicate "
    "(an API key), or your own ComfyUI (COMFYUI_URL; docs/providers.md)."
)


def understood(metadata: dict) -> tuple[str, str] | None:
    """What the local renderer drew of the prompt and what it could not, as the studio says it;
    None for a job it did not render (the metadata has no such words)."""
    if "understoodWords" not in metadata:
        return None
    drawn = ", ".join(metadata.get("understoodWords") or []) or "none of its words (a scene chosen from the prompt)"
    return drawn, ", ".join(metadata.get("notUnderstoodWords") or [])

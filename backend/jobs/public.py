"""The wire shape of jobs and steps: snake_case at the top, camelCase inside, as the guide shows.

Media URLs are made relative here and absolute at the edge (REST response, WebSocket
frame), where the address the client used is known.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from backend.providers.catalog import canonical
from backend.store.batches import BatchRecord
from backend.store.jobs import JobRecord
from backend.store.models import Job, JobStatus, JobStep, StepKind

MEDIA_URL_KEYS = ("image_url", "video_url")
#: The key of a `step_update` that tells of a new preview of the running step (ComfyUI's sampling).
PREVIEW_URL_KEY = "previewUrl"


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def media_path(job_id: str, kind: str) -> str:
    return f"/api/v1/jobs/{job_id}/download/{kind}"


def preview_path(job_id: str) -> str:
    return f"/api/v1/jobs/{job_id}/preview"


def preview_url(job_id: str, version: int) -> str:
    """The preview route with the preview's number: each new preview has a URL of its own."""
    return f"{preview_path(job_id)}?v={version}"


def with_query(url: str, query: str) -> str:
    """`url` (perhaps signed: it has a query already) with `query` added."""
    return f"{url}{'&' if '?' in url else '?'}{query}" if query else url


def cost(job: Job) -> dict[str, float]:
    return {"imageGeneration": job.image_cost, "videoGeneration": job.video_cost, "total": job.total_cost}


def settings_of(job: Job) -> dict[str, Any]:
    """The settings the job ran with, seed included, in the request's own names."""
    return {
        **job.extra,  # first: what a provider reported never hides the settings themselves
        "imageSize": job.image_size,
        "videoDuration": job.video_duration,
        "quality": job.quality,
        "seed": job.seed,
        "videoProvider": job.video_provider,
        "imageProvider": canonical(job.provider),  # the provider that ran it (the job echoes the name sent)
        "imageModel": job.image_model,
        "videoModel": job.video_model,
    }


def step_data(step: JobStep) -> dict[str, Any]:
    return {
        "id": step.kind,
        "name": StepKind(step.kind).label,
        "status": step.status,
        "progress": step.progress,
        "startTime": iso(step.started_at),
        "endTime": iso(step.ended_at),
    }


def media_urls(job: Job) -> dict[str, str | None]:
    # Expired media (retention removed them) have no URL; the paths stay on the job for the 410.
    expired = job.media_expired_at is not None
    return {
        "image_url": media_path(job.id, "image") if job.image_path and not expired else None,
        "video_url": media_path(job.id, "video") if job.video_path and not expired else None,
    }


def metadata_of(job: Job) -> dict[str, Any]:
    """The settings, plus `mediaExpiredAt` once retention removed the media (absent before:
    the guide's shape is unchanged for every other job)."""
    if job.media_expired_at is None:
        return settings_of(job)
    return {**settings_of(job), "mediaExpiredAt": iso(job.media_expired_at)}


def job_data(record: JobRecord) -> dict[str, Any]:
    job = record.job
    return {
        "id": job.id,
        "prompt": job.prompt,
        "provider": job.provider,
        "status": job.status,
        "progress": job.progress,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "metadata": metadata_of(job),
        **media_urls(job),
        "cost": cost(job),
        "error": job.error,
        "steps": [{**step_data(step), "log": step.log} for step in record.steps],
        "batch_id": job.batch_id,
    }


def batch_counts(batch: BatchRecord) -> dict[str, int]:
    """How many of the batch's jobs are in each status (only the statuses some job has)."""
    return dict(Counter(record.job.status for record in batch.jobs))


def batch_data(batch: BatchRecord, present: Callable[[JobRecord], dict[str, Any]] = job_data) -> dict[str, Any]:
    """A batch as GET /api/v1/batches/{id} answers it: its jobs (each as `present` makes it) and counts."""
    return {
        "id": batch.batch.id,
        "created_at": iso(batch.batch.created_at),
        "jobs": [present(record) for record in batch.jobs],
        "counts": batch_counts(batch),
    }


def job_update_data(job: Job) -> dict[str, Any]:
    return {"id": job.id, "status": job.status, "progress": job.progress, "updated_at": iso(job.updated_at)}


def job_completed_data(job: Job) -> dict[str, Any]:
    return {"id": job.id, "status": JobStatus.COMPLETED.value, "progress": 100, **media_urls(job), "cost": cost(job)}


def job_failed_data(job: Job) -> dict[str, Any]:
    return {"id": job.id, "status": JobStatus.FAILED.value, "error": job.error, "cost": cost(job)}


def absolute_media_urls(data: dict[str, Any], base_url: str, sign: Callable[[str], str] | None = None) -> dict[str, Any]:
    """`data` with its media paths turned into absolute URLs under `base_url`, signed by `sign`
    (expiring URLs that work in <img>/<video> without a header)."""
    base = base_url.rstrip("/")
    signed = sign or (lambda path: path)

    def absolute(key: str, value: Any) -> Any:
        if not value or not isinstance(value, str):
            return value
        if key in MEDIA_URL_KEYS:
            return f"{base}{signed(value)}"
        if key == PREVIEW_URL_KEY:  # the signature covers the path; `v` only makes each preview's URL new
            path, _, query = value.partition("?")
            return with_query(f"{base}{signed(path)}", query)
        return value

    return {key: absolute(key, value) for key, value in data.items()}

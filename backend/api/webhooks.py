"""`GET /api/v1/jobs/{id}/webhooks`: a job's webhook and its deliveries (docs/api.md#webhooks)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from typing_extensions import TypedDict

from backend.api.deps import JobsDep, UserDep
from backend.api.routes import errors


class WebhookAttempt(TypedDict):
    attempt: int
    at: str
    statusCode: int | None
    error: str | None


class WebhookDelivery(TypedDict):
    """One event to deliver; `id` is its `webhook-id` header, the same on every attempt."""

    id: str
    type: Literal["started", "progress", "completed", "failed", "cancelled"]
    status: Literal["pending", "delivered", "failed"]
    createdAt: str
    attempts: int
    lastAttemptAt: str | None
    lastStatusCode: int | None
    lastError: str | None
    nextAttemptAt: str | None
    history: list[WebhookAttempt]


class JobWebhooks(TypedDict):
    webhook: str | None
    events: list[str]
    deliveries: list[WebhookDelivery]


router = APIRouter()


@router.get("/api/v1/jobs/{job_id}/webhooks", tags=["jobs"], response_model=JobWebhooks, responses=errors(401, 404, 422, 429))
async def job_webhooks(job_id: str, jobs: JobsDep, user: UserDep) -> JSONResponse:
    """The job's webhook URL, the events it hears, and each delivery: attempts, last status code or error, next try."""
    return JSONResponse(jobs.webhook_deliveries(job_id, user))

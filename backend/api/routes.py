"""The REST API of the integration guide, under /api/v1, plus /health."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from backend.api.deps import Credentials, JobDep, SystemDep, UserDep, authenticate
from backend.api.errors import error_response
from backend.api.schemas import GENERATE_EXAMPLES, ErrorBody, Event, HealthBody, Job, StatusBody
from backend.auth import LOCAL_USER
from backend.errors import MediaExpired, MediaNotReady, MediaUnavailable, PreviewNotFound
from backend.jobs.idempotency import HEADER, IDEMPOTENCY_KEY_DOC, KEY_PATTERN, MAX_KEY_LENGTH, REPLAYED_HEADER, check_key
from backend.jobs.public import absolute_media_urls, iso, job_data, media_path, preview_path
from backend.jobs.request import GenerateRequest
from backend.media.store import MediaStorageError
from backend.store.jobs import JobRecord
from backend.store.models import JobStatus
from backend.system import System

#: The optional `Idempotency-Key` header of the creates (generate, batches): one declaration, one validation.
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(alias=HEADER, min_length=1, max_length=MAX_KEY_LENGTH, pattern=KEY_PATTERN, description=IDEMPOTENCY_KEY_DOC),
]

#: What a batch id looks like (`bat_` and URL-safe characters): anything else is 422, never a query.
BATCH_ID_PATTERN = r"^bat_[A-Za-z0-9_-]{1,60}$"

router = APIRouter()
MAX_PAGE_SIZE = 200
MAX_EVENT_PAGE = 5000
#: Largest integer a query parameter takes (beyond 64 bits the database driver raised: a 500). The
#: event `seq` column is a 32-bit INTEGER, and no page offset gets near it either.
MAX_QUERY_INT = 2**31 - 1
#: What each documented error status means; every one answers the ErrorBody format.
ERROR_STATUSES = {
    400: (
        "PROVIDER_UNAVAILABLE or PRICE_UNKNOWN: this server cannot run the chosen provider or model;"
        " BAD_REQUEST: an unreadable body."
    ),
    402: "BUDGET_EXCEEDED: the job's estimate would take the user or the service past a spending limit (PROMPTREEL_BUDGETS).",
    401: "UNAUTHORIZED: authentication is on and the bearer token is missing or not valid.",
    403: "SIGNATURE_INVALID: the media link is incomplete, was changed or has expired.",
    404: (
        "JOB_NOT_FOUND or BATCH_NOT_FOUND (or someone else's); MEDIA_NOT_READY for a file not made yet;"
        " PREVIEW_NOT_FOUND: no preview now."
    ),
    409: (
        "JOB_NOT_CANCELLABLE (already finished), JOB_BUSY (still stopping)"
        " or JOB_NOT_ANIMATABLE (not a completed image-only job)."
    ),
    410: "MEDIA_EXPIRED: media retention removed the file; the job itself is kept.",
    413: "PAYLOAD_TOO_LARGE: the request body is over PROMPTREEL_MAX_BODY_BYTES.",
    422: (
        "VALIDATION_ERROR: `details.errors` lists each field at fault; "
        "IDEMPOTENCY_KEY_REUSED: the Idempotency-Key came with another request."
    ),
    429: (
        "RATE_LIMITED: too many jobs within a minute, or too many wrong tokens from this address;"
        " Retry-After says when to try again."
    ),
    503: "QUEUE_FULL, STORE_UNAVAILABLE or MEDIA_UNAVAILABLE: try again later.",
}


def errors(*statuses: int) -> dict[int | str, dict]:
    """`responses=` for a route: these error statuses, documented with the ErrorBody model."""
    return {status: {"model": ErrorBody, "description": ERROR_STATUSES[status]} for status in statuses}


#: The list's 200: its header.
LIST_HEADERS: dict[str, Any] = {
    "headers": {
        "X-Total-Count": {"description": "How many jobs match, on every page.", "schema": {"type": "integer", "minimum": 0}}
    }
}
#: The download takes the owner's token or a signed link (`expires`, `signature`) without one: `{}`
#: in the security requirements says that no header is one of the ways in.
SIGNED_LINK_OR_TOKEN: dict[str, Any] = {"security": [{}]}


def base_url(request: Request, system: System) -> str:
    return system.settings.public_url or str(request.base_url)


def present(record: JobRecord, request: Request, system: System) -> dict:
    """A job as the guide shows it, its media URLs absolute and signed."""
    return absolute_media_urls(job_data(record), base_url(request, system), system.auth.sign)


def job_response(record: JobRecord, request: Request, system: System, status_code: int = 200) -> JSONResponse:
    """`present` as the answer itself: FastAPI would validate and re-encode a dict we built. The
    routes' `response_model` documents it (backend/api/schemas.py); a returned response is sent as is."""
    return JSONResponse(present(record, request, system), status_code)


@router.get("/health", tags=["system"], response_model=HealthBody, responses=errors(503))
async def health(system: SystemDep) -> Response:
    """200 when the job store answers and the media storage takes a write; 503 naming what failed."""
    # Both checks block (a query, a file or S3 call): in threads, side by side.
    store, media = await asyncio.gather(
        asyncio.to_thread(system.jobs.check_store), asyncio.to_thread(system.media.check), return_exceptions=True
    )
    checks = {"store": "ok" if store is None else "failed", "media": "ok" if media is None else "failed"}
    if isinstance(store, BaseException):
        reason = (str(getattr(store, "orig", None) or store).splitlines() or [type(store).__name__])[
            0
        ]  # the driver's words, not the SQL
        return error_response(503, f"The job store does not answer: {reason}", "STORE_UNAVAILABLE", {"checks": checks})
    if isinstance(media, BaseException):
        reason = str(media) if isinstance(media, MediaStorageError) else type(media).__name__
        return error_response(503, f"The media storage cannot be written to: {reason}", "MEDIA_UNAVAILABLE", {"checks": checks})
    return JSONResponse({"status": "ok", "checks": checks})


@router.post(
    "/api/v1/generate",
    tags=["jobs"],
    status_code=201,
    response_model=Job,
    responses=errors(400, 401, 402, 413, 422, 429, 503),
    openapi_extra={"requestBody": {"content": {"application/json": {"examples": GENERATE_EXAMPLES}}}},
)
async def generate(
    body: GenerateRequest,
    request: Request,
    system: SystemDep,
    user: UserDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Start a job: image step, then video step. Answers at once with the pending job."""
    if idempotency_key is not None:  # backend/jobs/idempotency.py
        record, replayed = await system.jobs.create_once(body, user, check_key(idempotency_key))
        response = job_response(record, request, system, 201)
        if replayed:
            response.headers[REPLAYED_HEADER] = "true"
        return response
    record = await system.jobs.create(body, user)  # 429 RATE_LIMITED with Retry-After, as in the studio
    return job_response(record, request, system, 201)


@router.get("/api/v1/jobs", tags=["jobs"], response_model=list[Job], responses={200: LIST_HEADERS, **errors(401, 422, 429)})
async def list_jobs(
    request: Request,
    system: SystemDep,
    user: UserDep,
    status: Annotated[
        list[JobStatus] | None, Query(description="Only jobs in these statuses (repeat the parameter for several).")
    ] = None,
    q: Annotated[str | None, Query(max_length=200, description="Only jobs whose prompt contains this text.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_QUERY_INT)] = 0,
    batch: Annotated[
        str | None,
        Query(max_length=64, pattern=BATCH_ID_PATTERN, description="Only the jobs of this batch (POST /api/v1/batches)."),
    ] = None,
) -> JSONResponse:
    """Newest first. The body is the guide's plain array; X-Total-Count tells how many match."""
    records, total = system.jobs.list(
        user, statuses=[s.value for s in status or ()], search=q, limit=limit, offset=offset, batch=batch
    )
    return JSONResponse([present(record, request, system) for record in records], headers={"X-Total-Count": str(total)})


@router.get("/api/v1/jobs/{job_id}", tags=["jobs"], response_model=Job, responses=errors(401, 404, 422, 429))
async def get_job(record: JobDep, request: Request, system: SystemDep) -> JSONResponse:
    return job_response(record, request, system)


@router.get("/api/v1/jobs/{job_id}/events", tags=["jobs"], response_model=list[Event], responses=errors(401, 404, 422, 429))
async def job_events(
    job_id: str,
    request: Request,
    system: SystemDep,
    user: UserDep,
    after: Annotated[
        int, Query(ge=0, le=MAX_QUERY_INT, description="Only events numbered above this `seq` (the last one the client saw).")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENT_PAGE)] = 1000,
) -> JSONResponse:
    """The job's stored events in order, each as /ws sends it, with its `seq`: a client that lost
    its WebSocket reads what it missed, then listens again."""
    # Read here, not by JobDep: a bad `after` or `limit` answers 422 before a missing job's 404.
    events = system.jobs.events(job_id, user, after, limit)  # 404 for a job that does not exist (or is someone else's)
    base = base_url(request, system)
    return JSONResponse([{**event, "data": absolute_media_urls(event["data"], base, system.auth.sign)} for event in events])


@router.delete("/api/v1/jobs/{job_id}", tags=["jobs"], response_model=Job, responses=errors(401, 404, 409, 422, 429))
async def cancel_job(job_id: str, request: Request, system: SystemDep, user: UserDep) -> JSONResponse:
    """Cancel a pending or running job, and its provider's remote task; answers the cancelled job."""
    record = await system.jobs.cancel(job_id, user)
    return job_response(record, request, system)


@router.get("/api/v1/status", tags=["system"], response_model=StatusBody, responses=errors(401, 429))
async def status(system: SystemDep, user: UserDep) -> JSONResponse:
    await system.providers.check_keys()  # the first key checks' answers: 0.8 s at most, once
    return JSONResponse(system.jobs.status().public())


DOWNLOAD_RESPONSES: dict[int | str, dict] = {
    200: {"description": "The PNG or MP4, as an attachment.", "content": {"image/png": {}, "video/mp4": {}}},
    206: {"description": "The byte range the Range header asked for.", "content": {"image/png": {}, "video/mp4": {}}},
    307: {"description": "With S3 media: a short-lived presigned URL of the file."},
    **errors(401, 403, 404, 410, 422, 429, 503),
}


# GET and HEAD as two routes (not one api_route): each gets its own operationId in the OpenAPI.
@router.get(
    "/api/v1/jobs/{job_id}/download/{type}",
    tags=["jobs"],
    response_class=FileResponse,
    responses=DOWNLOAD_RESPONSES,
    openapi_extra=SIGNED_LINK_OR_TOKEN,
)
@router.head(
    "/api/v1/jobs/{job_id}/download/{type}",
    tags=["jobs"],
    response_class=FileResponse,
    responses=DOWNLOAD_RESPONSES,
    openapi_extra=SIGNED_LINK_OR_TOKEN,
)
async def download(
    job_id: str,
    type: Literal["image", "video"],
    request: Request,
    system: SystemDep,
    credentials: Credentials,
    expires: Annotated[str | None, Query(max_length=20, description="From the job's signed image_url/video_url.")] = None,
    signature: Annotated[str | None, Query(max_length=128, description="From the job's signed image_url/video_url.")] = None,
) -> Response:
    """The job's PNG or MP4, as an attachment; byte ranges are served so a player can seek.

    Either the signed URL of the job's `image_url`/`video_url` (no header needed: `<img>`,
    `<video>`), or the owner's token. With S3 media the instance streams the object, or
    redirects to a short-lived presigned URL.
    """
    if expires is not None or signature is not None:
        system.auth.check(media_path(job_id, type), expires, signature)  # 403 when changed or expired
        user = LOCAL_USER  # the signature was issued to someone who could see the job
    else:
        user = authenticate(request, system, credentials)
    job = system.jobs.get(job_id, user).job
    relative = job.image_path if type == "image" else job.video_path
    if relative and job.media_expired_at is not None:
        raise MediaExpired(job_id, type, iso(job.media_expired_at))  # it existed: 410, not 404
    try:
        response = await system.media.download_response(relative, type, job.id, request)
    except MediaStorageError as error:
        raise MediaUnavailable(job_id, type, str(error)) from error
    if response is None:
        raise MediaNotReady(job_id, type, job.status)
    return response


PREVIEW_RESPONSES: dict[int | str, dict] = {
    200: {
        "description": "The running step's latest preview, a JPEG (not cached: the next one replaces it).",
        "content": {"image/jpeg": {}},
    },
    **errors(401, 403, 404, 422, 429, 503),
}


@router.get(
    "/api/v1/jobs/{job_id}/preview",
    tags=["jobs"],
    response_class=Response,
    responses=PREVIEW_RESPONSES,
    openapi_extra=SIGNED_LINK_OR_TOKEN,
)
async def preview(
    job_id: str,
    request: Request,
    system: SystemDep,
    credentials: Credentials,
    v: Annotated[
        int | None, Query(ge=0, le=MAX_QUERY_INT, description="The preview's number from `previewUrl`; only makes each URL new.")
    ] = None,
    expires: Annotated[str | None, Query(max_length=20, description="From the `previewUrl` of a `step_update`.")] = None,
    signature: Annotated[str | None, Query(max_length=128, description="From the `previewUrl` of a `step_update`.")] = None,
) -> Response:
    """The latest preview of the job's running step (ComfyUI's sampling frames, re-encoded as a small
    JPEG), while it runs: a `step_update` with `previewUrl` tells of each new one. 404
    PREVIEW_NOT_FOUND when there is none (not yet, not this provider, or the step ended)."""
    if expires is not None or signature is not None:
        system.auth.check(preview_path(job_id), expires, signature)  # 403 when changed or expired
        user = LOCAL_USER  # the signature was issued to someone who could see the job
    else:
        user = authenticate(request, system, credentials)
    job = system.jobs.get(job_id, user).job
    if job.job_status not in (JobStatus.GENERATING_IMAGE, JobStatus.GENERATING_VIDEO):
        # No step runs: a file still there is a leftover (a crashed or replaced worker's), not a live preview.
        raise PreviewNotFound(job_id, job.status)
    try:
        jpeg = await asyncio.to_thread(system.media.read_preview, job.id)
    except MediaStorageError as error:
        raise MediaUnavailable(job_id, "preview", str(error)) from error
    if jpeg is None:
        raise PreviewNotFound(job_id, job.status)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

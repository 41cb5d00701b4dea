"""The REST API of the integration guide, under /api/v1, plus /health."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from backend.api.errors import ErrorBody, error_response
from backend.auth import LOCAL_USER, User
from backend.errors import MediaExpired, MediaNotReady, MediaUnavailable, Unauthorized
from backend.jobs.public import absolute_media_urls, iso, job_data, media_path
from backend.jobs.request import GenerateRequest
from backend.media.store import MediaStorageError
from backend.store.jobs import JobRecord
from backend.store.models import JobStatus
from backend.system import System

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
    401: "UNAUTHORIZED: authentication is on and the bearer token is missing or not valid.",
    403: "SIGNATURE_INVALID: the media link is incomplete, was changed or has expired.",
    404: "JOB_NOT_FOUND (or someone else's job); MEDIA_NOT_READY for a file not made yet.",
    409: "JOB_NOT_CANCELLABLE (already finished) or JOB_BUSY (still stopping).",
    410: "MEDIA_EXPIRED: media retention removed the file; the job itself is kept.",
    413: "PAYLOAD_TOO_LARGE: the request body is over PROMPTREEL_MAX_BODY_BYTES.",
    422: "VALIDATION_ERROR: `details.errors` lists each field at fault.",
    429: (
        "RATE_LIMITED: too many jobs within a minute, or too many wrong tokens from this address;"
        " Retry-After says when to try again."
    ),
    503: "QUEUE_FULL, STORE_UNAVAILABLE or MEDIA_UNAVAILABLE: try again later.",
}


def errors(*statuses: int) -> dict[int | str, dict]:
    """`responses=` for a route: these error statuses, documented with the ErrorBody model."""
    return {status: {"model": ErrorBody, "description": ERROR_STATUSES[status]} for status in statuses}


# Dependencies are coroutines: FastAPI runs a plain function in its thread pool, a thread hop per
# request that cost more than the whole dependency (bench/bench_api.py).
async def get_system(request: Request) -> System:
    return request.app.state.system


SystemDep = Annotated[System, Depends(get_system)]
#: `Authorization: Bearer <token>`; shown in /docs, checked by `current_user` (auto_error off: our error format).
bearer = HTTPBearer(auto_error=False, description="API_TOKEN / one of API_TOKENS (only when authentication is on)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def client_address(connection: HTTPConnection) -> str:
    """The client's address, whose wrong tokens are counted: the connection's peer, or the
    X-Forwarded-For of a proxy uvicorn trusts (FORWARDED_ALLOW_IPS, loopback by default)."""
    return connection.client.host if connection.client else "unknown"


def user_of(credentials: HTTPAuthorizationCredentials | None, system: System, request: Request) -> User | None:
    return system.auth.user_for(credentials.credentials if credentials else None, client_address(request))


def authenticate(request: Request, system: System, credentials: HTTPAuthorizationCredentials | None) -> User:
    """The caller (authentication on), or the one local user (off); 401 for a missing or wrong token,
    429 for an address that sent too many wrong ones within a minute."""
    user = user_of(credentials, system, request)
    if user is None:
        raise Unauthorized("The API token is not valid.") if credentials else Unauthorized()
    request.state.user = user  # for the request log
    return user


async def current_user(request: Request, system: SystemDep, credentials: Credentials) -> User:
    return authenticate(request, system, credentials)


UserDep = Annotated[User, Depends(current_user)]


def base_url(request: Request, system: System) -> str:
    return system.settings.public_url or str(request.base_url)


def present(record: JobRecord, request: Request, system: System) -> dict:
    """A job as the guide shows it, its media URLs absolute and signed."""
    return absolute_media_urls(job_data(record), base_url(request, system), system.auth.sign)


def job_response(record: JobRecord, request: Request, system: System, status_code: int = 200) -> JSONResponse:
    """`present` as the answer itself: FastAPI would validate and re-encode a dict we built (the
    routes keep `response_model=dict`, so the OpenAPI document is unchanged)."""
    return JSONResponse(present(record, request, system), status_code)


@router.get("/health", tags=["system"], responses=errors(503))
async def health(system: SystemDep) -> Response:
    """200 when the job store answers and the media storage takes a write; 503 naming what failed."""
    # Both checks block (a query, a file or S3 call): in threads, side by side.
    store, media = await asyncio.gather(
        asyncio.to_thread(system.store.ping), asyncio.to_thread(system.media.check), return_exceptions=True
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
    "/api/v1/generate", tags=["jobs"], status_code=201, response_model=dict, responses=errors(400, 401, 413, 422, 429, 503)
)
async def generate(body: GenerateRequest, request: Request, system: SystemDep, user: UserDep) -> JSONResponse:
    """Start a job: image step, then video step. Answers at once with the pending job."""
    record = await system.jobs.create(body, user)  # 429 RATE_LIMITED with Retry-After, as in the studio
    return job_response(record, request, system, 201)


@router.get("/api/v1/jobs", tags=["jobs"], responses=errors(401, 422, 429))
async def list_jobs(
    request: Request,
    response: Response,
    system: SystemDep,
    user: UserDep,
    status: Annotated[
        list[JobStatus] | None, Query(description="Only jobs in these statuses (repeat the parameter for several).")
    ] = None,
    q: Annotated[str | None, Query(max_length=200, description="Only jobs whose prompt contains this text.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_QUERY_INT)] = 0,
) -> list[dict]:
    """Newest first. The body is the guide's plain array; X-Total-Count tells how many match."""
    records, total = system.store.list(
        statuses=[s.value for s in status or ()], search=q, limit=limit, offset=offset, owner=user.name
    )
    response.headers["X-Total-Count"] = str(total)
    return [present(record, request, system) for record in records]


@router.get("/api/v1/jobs/{job_id}", tags=["jobs"], response_model=dict, responses=errors(401, 404, 422, 429))
async def get_job(job_id: str, request: Request, system: SystemDep, user: UserDep) -> JSONResponse:
    return job_response(system.jobs.get(job_id, user), request, system)


@router.get("/api/v1/jobs/{job_id}/events", tags=["jobs"], responses=errors(401, 404, 422, 429))
async def job_events(
    job_id: str,
    request: Request,
    system: SystemDep,
    user: UserDep,
    after: Annotated[
        int, Query(ge=0, le=MAX_QUERY_INT, description="Only events numbered above this `seq` (the last one the client saw).")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENT_PAGE)] = 1000,
) -> list[dict]:
    """The job's stored events in order, each as /ws sends it, with its `seq`: a client that lost
    its WebSocket reads what it missed, then listens again."""
    system.jobs.get(job_id, user)  # 404 for a job that does not exist (or is someone else's)
    base = base_url(request, system)
    return [
        {**event, "data": absolute_media_urls(event["data"], base, system.auth.sign)}
        for event in system.event_log.after(job_id, after, limit)
    ]


@router.delete("/api/v1/jobs/{job_id}", tags=["jobs"], responses=errors(401, 404, 409, 422, 429))
async def cancel_job(job_id: str, request: Request, system: SystemDep, user: UserDep) -> dict:
    """Cancel a pending or running job, and its provider's remote task; answers the cancelled job."""
    record = await system.jobs.cancel(job_id, user)
    return present(record, request, system)


@router.get("/api/v1/status", tags=["system"], responses=errors(401, 429))
async def status(system: SystemDep, user: UserDep) -> dict:
    await system.providers.check_keys()  # the first key checks' answers: 0.8 s at most, once
    return system.jobs.status().public()


DOWNLOAD_RESPONSES: dict[int | str, dict] = {
    200: {"description": "The PNG or MP4, as an attachment.", "content": {"image/png": {}, "video/mp4": {}}},
    206: {"description": "The byte range the Range header asked for.", "content": {"image/png": {}, "video/mp4": {}}},
    307: {"description": "With S3 media: a short-lived presigned URL of the file."},
    **errors(401, 403, 404, 410, 422, 429, 503),
}


# GET and HEAD as two routes (not one api_route): each gets its own operationId in the OpenAPI.
@router.get("/api/v1/jobs/{job_id}/download/{type}", tags=["jobs"], response_class=FileResponse, responses=DOWNLOAD_RESPONSES)
@router.head("/api/v1/jobs/{job_id}/download/{type}", tags=["jobs"], response_class=FileResponse, responses=DOWNLOAD_RESPONSES)
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

"""The REST API of the integration guide, under /api/v1, plus /health."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from ..errors import MediaNotReady, MediaUnavailable
from ..media import MediaStorageError
from ..models import JobStatus
from ..public import absolute_media_urls, job_data
from ..schemas import GenerateRequest
from ..store import JobRecord
from ..system import System
from .errors import error_response

router = APIRouter()
MAX_PAGE_SIZE = 200
MAX_EVENT_PAGE = 5000


def get_system(request: Request) -> System:
    return request.app.state.system


SystemDep = Annotated[System, Depends(get_system)]


def base_url(request: Request, system: System) -> str:
    return system.settings.public_url or str(request.base_url)


def present(record: JobRecord, request: Request, system: System) -> dict:
    return absolute_media_urls(job_data(record), base_url(request, system))


@router.get("/health", tags=["system"])
async def health(system: SystemDep) -> Response:
    try:
        system.store.ping()
    except Exception as error:
        return error_response(503, f"The job store does not answer: {error}", "STORE_UNAVAILABLE")
    return JSONResponse({"status": "ok"})


@router.post("/api/v1/generate", tags=["jobs"], status_code=201)
async def generate(body: GenerateRequest, request: Request, system: SystemDep) -> dict:
    """Start a job: image step, then video step. Answers at once with the pending job."""
    record = await system.jobs.create(body)
    return present(record, request, system)


@router.get("/api/v1/jobs", tags=["jobs"])
async def list_jobs(
    request: Request,
    response: Response,
    system: SystemDep,
    status: Annotated[list[JobStatus] | None, Query(description="Only jobs in these statuses (repeat the parameter for several).")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Only jobs whose prompt contains this text.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict]:
    """Newest first. The body is the guide's plain array; X-Total-Count tells how many match."""
    records, total = system.store.list(statuses=[s.value for s in status or ()], search=q, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return [present(record, request, system) for record in records]


@router.get("/api/v1/jobs/{job_id}", tags=["jobs"])
async def get_job(job_id: str, request: Request, system: SystemDep) -> dict:
    return present(system.jobs.get(job_id), request, system)


@router.get("/api/v1/jobs/{job_id}/events", tags=["jobs"])
async def job_events(
    job_id: str,
    request: Request,
    system: SystemDep,
    after: Annotated[int, Query(ge=0, description="Only events numbered above this `seq` (the last one the client saw).")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENT_PAGE)] = 1000,
) -> list[dict]:
    """The job's stored events in order, each as /ws sends it, with its `seq`: a client that lost
    its WebSocket reads what it missed, then listens again."""
    system.jobs.get(job_id)  # 404 for a job that does not exist
    base = base_url(request, system)
    return [{**event, "data": absolute_media_urls(event["data"], base)} for event in system.event_log.after(job_id, after, limit)]


@router.delete("/api/v1/jobs/{job_id}", tags=["jobs"])
async def cancel_job(job_id: str, request: Request, system: SystemDep) -> dict:
    """Cancel a pending or running job, and its provider's remote task; answers the cancelled job."""
    record = await system.jobs.cancel(job_id)
    return present(record, request, system)


@router.get("/api/v1/status", tags=["system"])
async def status(system: SystemDep) -> dict:
    await system.providers.check_keys()  # the first key checks' answers: 0.8 s at most, once
    return system.jobs.status().public()


@router.api_route("/api/v1/jobs/{job_id}/download/{type}", methods=["GET", "HEAD"], tags=["jobs"], response_class=FileResponse)
async def download(job_id: str, type: Literal["image", "video"], request: Request, system: SystemDep) -> Response:  # noqa: A002 - the guide's name
    """The job's PNG or MP4, as an attachment; byte ranges are served so a player can seek.

    With S3 media the instance streams the object, or redirects to a short-lived presigned URL.
    """
    job = system.jobs.get(job_id).job
    relative = job.image_path if type == "image" else job.video_path
    try:
        response = await system.media.download_response(relative, type, job.id, request)
    except MediaStorageError as error:
        raise MediaUnavailable(job_id, type, str(error)) from error
    if response is None:
        raise MediaNotReady(job_id, type, job.status)
    return response

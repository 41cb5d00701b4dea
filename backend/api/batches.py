"""Batches of jobs (docs/api.md#batches): `POST /api/v1/batches` (variants of one request, or a
list of requests), `GET` and `DELETE /api/v1/batches/{id}`, and `POST /api/v1/jobs/{id}/animate`
(a video for an image-only job)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import Discriminator, Field, Tag
from typing_extensions import TypedDict

from backend.api.deps import JobsDep, SystemDep, UserDep
from backend.api.routes import IdempotencyKeyHeader, errors, job_response, present
from backend.api.schemas import Job
from backend.jobs.idempotency import REPLAYED_HEADER, check_key
from backend.jobs.public import batch_data
from backend.jobs.request import AnimateRequest, BatchListRequest, VariantsRequest
from backend.store.batches import BatchRecord
from backend.system import System

#: The two shapes of a batch's body, told apart by its `jobs` key.
LIST_SHAPE, VARIANTS_SHAPE = "list", "variants"


def _shape(body: Any) -> str:
    return LIST_SHAPE if isinstance(body, dict) and "jobs" in body else VARIANTS_SHAPE


BatchBody = Annotated[
    Annotated[VariantsRequest, Tag(VARIANTS_SHAPE)] | Annotated[BatchListRequest, Tag(LIST_SHAPE)], Discriminator(_shape)
]


class UntaggedErrors(APIRoute):
    """Validation errors of a batch's body named as the client wrote it: pydantic puts the shape's
    tag in each error's location ('body', 'list', 'jobs', 3, ...), which names no field."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await handle(request)
            except RequestValidationError as error:
                untagged = [
                    {**item, "loc": (item["loc"][0], *item["loc"][2:])}
                    if item.get("loc", ())[:1] == ("body",) and item["loc"][1:2] in ((LIST_SHAPE,), (VARIANTS_SHAPE,))
                    else item
                    for item in error.errors()
                ]
                raise RequestValidationError(untagged, body=error.body) from None

        return handler


router = APIRouter(route_class=UntaggedErrors)


class BatchBodySchema(TypedDict):
    """A batch: its jobs in the order they were asked for, and how many are in each status."""

    id: Annotated[str, Field(description="The batch's id, e.g. bat_abc123.")]
    created_at: str
    jobs: list[Job]
    counts: Annotated[dict[str, int], Field(description="Jobs per status, e.g. {'completed': 3, 'cancelled': 1}.")]


def batch_response(batch: BatchRecord, request: Request, system: System, status_code: int = 200) -> JSONResponse:
    return JSONResponse(batch_data(batch, lambda record: present(record, request, system)), status_code)


BatchId = Annotated[str, Path(max_length=64, description="The batch's id, e.g. bat_abc123.")]
BATCH_EXAMPLES: dict[str, Any] = {
    "variants": {
        "summary": "Four variants of one request (seeds 7, 8, 9, 10)",
        "value": {"prompt": "A lighthouse in a storm", "provider": "local", "settings": {"seed": 7}, "count": 4},
    },
    "list": {
        "summary": "A list of requests, one webhook for all",
        "value": {
            "jobs": [{"prompt": "A red fox", "provider": "local"}, {"prompt": "A blue whale", "provider": "local"}],
            "webhook": "https://example.com/hooks/promptreel",
        },
    },
}


@router.post(
    "/api/v1/batches",
    tags=["batches"],
    status_code=201,
    response_model=BatchBodySchema,
    responses=errors(400, 401, 402, 413, 422, 429, 503),
)
async def create_batch(
    body: Annotated[BatchBody, Body(openapi_examples=BATCH_EXAMPLES)],
    request: Request,
    system: SystemDep,
    jobs: JobsDep,
    user: UserDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Create several jobs at once, all or nothing: `count` (2-8) variants of one request with
    different seeds, or a list of up to 50 requests (`jobs`). Answers the batch with its pending jobs."""
    if idempotency_key is not None:
        batch, replayed = await jobs.create_batch_once(body, user, check_key(idempotency_key))
        response = batch_response(batch, request, system, 201)
        if replayed:
            response.headers[REPLAYED_HEADER] = "true"
        return response
    return batch_response(await jobs.create_batch(body, user), request, system, 201)


@router.get("/api/v1/batches/{batch_id}", tags=["batches"], response_model=BatchBodySchema, responses=errors(401, 404, 422, 429))
async def get_batch(batch_id: BatchId, request: Request, system: SystemDep, jobs: JobsDep, user: UserDep) -> JSONResponse:
    """The batch, its jobs in the order they were asked for, and how many are in each status."""
    return batch_response(jobs.batch(batch_id, user), request, system)


@router.delete(
    "/api/v1/batches/{batch_id}", tags=["batches"], response_model=BatchBodySchema, responses=errors(401, 404, 422, 429)
)
async def cancel_batch(batch_id: BatchId, request: Request, system: SystemDep, jobs: JobsDep, user: UserDep) -> JSONResponse:
    """Cancel every unfinished job of the batch; finished ones stay as they are. Answers the batch."""
    return batch_response(await jobs.cancel_batch(batch_id, user), request, system)


@router.post(
    "/api/v1/jobs/{job_id}/animate",
    tags=["jobs"],
    status_code=201,
    response_model=Job,
    responses=errors(400, 401, 402, 404, 409, 413, 422, 429, 503),
)
async def animate(
    job_id: str,
    request: Request,
    system: SystemDep,
    jobs: JobsDep,
    user: UserDep,
    body: Annotated[AnimateRequest | None, Body()] = None,
) -> JSONResponse:
    """A video for a completed image-only job (`settings.imageOnly`): a new job whose image step
    takes that job's image at once, at no cost (`metadata.sourceJob`), in the same batch."""
    record = await jobs.animate(job_id, body or AnimateRequest(), user)
    return job_response(record, request, system, 201)

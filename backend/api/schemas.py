"""The API's answers as they go on the wire, typed: the job, its steps and events, the status, health
and error bodies. They document the routes (`response_model=`, `responses=`) and so /openapi.json.

The data itself is built elsewhere (backend/jobs/public.py for jobs and events, JobService's status,
api/errors.py's error_response) and sent as it was built: the routes return a JSONResponse, so these
types never filter, reorder or fill in a key on the wire. tests/api/test_api_schema.py holds the live
answers to them, key for key, and runs Schemathesis's checks against /openapi.json.

TypedDicts rather than models: a key that is sometimes absent (`metadata.mediaExpiredAt`, a
`job_failed`'s `cost`) is `NotRequired`, not a null that was never sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict  # pydantic takes typing's only from Python 3.12

from backend.jobs.request import ImageSize
from backend.store.models import JobStatus, StepKind, StepStatus

Time = Annotated[datetime, Field(description="ISO 8601, UTC, e.g. 2024-01-15T10:30:00Z.")]
MediaUrl = Annotated[
    str | None,
    Field(
        description="Absolute signed URL of the download route (for <img>/<video>, no header needed); null until the file exists."
    ),
]
Progress = Annotated[int, Field(ge=0, le=100, description="0-100, never goes down; 100 only when completed.")]
JobId = Annotated[str, Field(description="The job's id, e.g. job_abc123.")]

#: POST /api/v1/generate's bodies, as `examples` of the request (the local renderer needs no key: "Try it out" works).
GENERATE_EXAMPLES: dict[str, Any] = {
    "local": {
        "summary": "The built-in renderer, no key needed",
        "value": {
            "prompt": "A majestic mountain landscape at golden hour",
            "provider": "local",
            "settings": {
                "imageSize": "1024x1024",
                "videoDuration": 5,
                "quality": "high",
                "seed": 12345,
                "videoProvider": "local",
            },
        },
    },
    "dalle3": {
        "summary": "The guide's request: dalle3 (OpenAI's default image model, gpt-image-2), then the default video provider",
        "value": {
            "prompt": "A majestic mountain landscape at golden hour",
            "provider": "dalle3",
            "settings": {"imageSize": "1024x1024", "videoDuration": 10, "quality": "high"},
        },
    },
}
JOB_EXAMPLE: dict[str, Any] = {
    "id": "job_abc123",
    "prompt": "A majestic mountain landscape at golden hour",
    "provider": "local",
    "status": "completed",
    "progress": 100,
    "created_at": "2024-01-15T10:30:00Z",
    "updated_at": "2024-01-15T10:30:09Z",
    "metadata": {
        "videoWidth": 1024,
        "videoHeight": 1024,
        "imageSize": "1024x1024",
        "videoDuration": 5,
        "quality": "high",
        "seed": 12345,
        "videoProvider": "local",
        "imageModel": "promptreel-scene-1",
        "videoModel": "promptreel-animate-1",
    },
    "image_url": "http://localhost:8000/api/v1/jobs/job_abc123/download/image?expires=1705314600&signature=3f1c...",
    "video_url": "http://localhost:8000/api/v1/jobs/job_abc123/download/video?expires=1705314600&signature=9b2e...",
    "cost": {"imageGeneration": 0.0, "videoGeneration": 0.0, "total": 0.0},
    "error": None,
    "batch_id": None,
    "steps": [
        {
            "id": "image_generation",
            "name": "Image Generation",
            "status": "completed",
            "progress": 100,
            "startTime": "2024-01-15T10:30:00Z",
            "endTime": "2024-01-15T10:30:02Z",
            "log": [],
        },
        {
            "id": "video_generation",
            "name": "Video Generation",
            "status": "completed",
            "progress": 100,
            "startTime": "2024-01-15T10:30:02Z",
            "endTime": "2024-01-15T10:30:09Z",
            "log": [],
        },
    ],
}


@with_config(ConfigDict(extra="forbid", json_schema_extra={"examples": [JOB_EXAMPLE["cost"]]}))
class Cost(TypedDict):
    """What the job cost, in USD: what the providers charged, failed or cancelled steps included."""

    imageGeneration: float
    videoGeneration: float
    total: float


@with_config(ConfigDict(extra="forbid"))
class StepFields(TypedDict):
    """A step, as `step_update` sends it and the job lists it."""

    id: StepKind
    name: Annotated[str, Field(description="The step's title: Image Generation, Video Generation.")]
    status: StepStatus
    progress: Progress
    startTime: Time | None
    endTime: Time | None


@with_config(ConfigDict(extra="forbid"))
class StepUpdateData(StepFields):
    """A step as `step_update` sends it."""

    previewUrl: NotRequired[
        Annotated[
            str,
            Field(
                description="Only on the `step_update` that tells of a new live preview of the running step (ComfyUI's "
                "sampling frames): the absolute signed URL of GET /api/v1/jobs/{id}/preview, new for each preview."
            ),
        ]
    ]


@with_config(ConfigDict(extra="forbid"))
class Step(StepFields):
    """A step of the job, with its log."""

    log: Annotated[list[str], Field(description="What happened in the step, in words (retries, refunds, late results).")]


@with_config(ConfigDict(extra="allow"))
class JobMetadata(TypedDict):
    """The settings the job ran with (the seed included, also when it was drawn), the models used, and
    what a provider reported; open to more keys a provider reports."""

    imageSize: ImageSize
    videoDuration: int
    quality: Literal["standard", "high"]
    seed: int
    videoProvider: Literal["runway", "local"]
    imageModel: str | None
    videoModel: str | None
    mediaExpiredAt: NotRequired[Annotated[Time, Field(description="When retention removed the media (then absent before).")]]
    revisedPrompt: NotRequired[Annotated[str, Field(description="dalle3: the prompt as OpenAI rewrote it.")]]
    replicatePredictionId: NotRequired[str]
    runwayTaskId: NotRequired[str]
    videoWidth: NotRequired[int]
    videoHeight: NotRequired[int]
    imageOnly: NotRequired[Annotated[bool, Field(description="The job stops after its image (settings.imageOnly).")]]
    sourceJob: NotRequired[
        Annotated[str, Field(description="The image-only job whose image this job animates (POST /api/v1/jobs/{id}/animate).")]
    ]


@with_config(ConfigDict(extra="forbid", json_schema_extra={"examples": [JOB_EXAMPLE]}))
class Job(TypedDict):
    """A job as the integration guide shows it: snake_case at the top, camelCase inside."""

    id: JobId
    prompt: str
    provider: Literal["dalle3", "flux1", "local"]
    status: JobStatus
    progress: Progress
    created_at: Time
    updated_at: Time
    metadata: JobMetadata
    image_url: MediaUrl
    video_url: MediaUrl
    cost: Cost
    error: Annotated[str | None, Field(description="Why the job failed; null otherwise.")]
    steps: Annotated[list[Step], Field(description="Image Generation, then Video Generation (an image-only job: the first).")]
    batch_id: Annotated[
        str | None, Field(description="The batch the job belongs to (POST /api/v1/batches); null for a lone job.")
    ]


@with_config(ConfigDict(extra="forbid"))
class JobUpdateData(TypedDict):
    id: JobId
    status: JobStatus
    progress: Progress
    updated_at: Time


@with_config(ConfigDict(extra="forbid"))
class JobCompletedData(TypedDict):
    id: JobId
    status: Literal["completed"]
    progress: Literal[100]
    image_url: MediaUrl
    video_url: MediaUrl
    cost: Cost


@with_config(ConfigDict(extra="forbid"))
class JobFailedData(TypedDict):
    id: JobId
    status: Literal["failed"]
    error: str | None
    cost: NotRequired[Annotated[Cost, Field(description="Absent when the job failed on an internal error.")]]


Seq = Annotated[int, Field(ge=1, description="The event's number within its job: 1, 2, 3, ... without gaps.")]


@with_config(ConfigDict(extra="forbid"))
class JobUpdateEvent(TypedDict):
    """The job's status or progress changed (a cancelled job ends with one saying `cancelled`)."""

    type: Literal["job_update"]
    jobId: JobId
    data: JobUpdateData
    seq: Seq


@with_config(ConfigDict(extra="forbid"))
class StepUpdateEvent(TypedDict):
    """A step changed."""

    type: Literal["step_update"]
    jobId: JobId
    data: StepUpdateData
    seq: Seq


@with_config(ConfigDict(extra="forbid"))
class JobCompletedEvent(TypedDict):
    """The job's last event when it completed."""

    type: Literal["job_completed"]
    jobId: JobId
    data: JobCompletedData
    seq: Seq


@with_config(ConfigDict(extra="forbid"))
class JobFailedEvent(TypedDict):
    """The job's last event when it failed."""

    type: Literal["job_failed"]
    jobId: JobId
    data: JobFailedData
    seq: Seq


#: An event, as /ws sends it and GET /api/v1/jobs/{id}/events lists it.
Event = Annotated[JobUpdateEvent | StepUpdateEvent | JobCompletedEvent | JobFailedEvent, Field(discriminator="type")]

STATUS_EXAMPLE: dict[str, Any] = {
    "dalle3_available": True,
    "flux1_available": False,
    "runway_available": True,
    "active_jobs": 2,
    "queue_length": 5,
    "system_load": 0.75,
    "workers_alive": 1,
}


@with_config(ConfigDict(extra="forbid", json_schema_extra={"examples": [STATUS_EXAMPLE]}))
class StatusBody(TypedDict):
    """The guide's system status, plus `workers_alive`."""

    dalle3_available: bool
    flux1_available: bool
    runway_available: bool
    comfyui_available: NotRequired[Annotated[bool, Field(description="COMFYUI_URL is set and ComfyUI answers.")]]
    comfyui_missing: NotRequired[
        Annotated[
            str | None, Field(description="What ComfyUI lacks for the workflows (node classes, model files); null: nothing.")
        ]
    ]
    active_jobs: Annotated[int, Field(ge=0, description="Steps running (in a cluster: jobs generating).")]
    queue_length: Annotated[int, Field(ge=0, description="Steps waiting for a slot (in a cluster: jobs not started).")]
    system_load: Annotated[float, Field(ge=0, description="The 1-minute load average per CPU of this machine.")]
    workers_alive: Annotated[int, Field(ge=0)]


@with_config(ConfigDict(extra="forbid"))
class HealthChecks(TypedDict):
    store: Literal["ok", "failed"]
    media: Literal["ok", "failed"]


@with_config(
    ConfigDict(extra="forbid", json_schema_extra={"examples": [{"status": "ok", "checks": {"store": "ok", "media": "ok"}}]})
)
class HealthBody(TypedDict):
    """The job store answers and the media storage takes a write."""

    status: Literal["ok"]
    checks: HealthChecks


@with_config(
    ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"error": "No job with id 'job_abc123'.", "code": "JOB_NOT_FOUND", "details": {"field": "id", "id": "job_abc123"}}
            ]
        },
    )
)
class ErrorBody(TypedDict):
    """The body of every error answer, as `error_response` writes it."""

    error: Annotated[str, Field(description="What went wrong, in words for a person.")]
    code: Annotated[str, Field(description="A stable UPPER_SNAKE code, e.g. JOB_NOT_FOUND, VALIDATION_ERROR, UNAUTHORIZED.")]
    details: Annotated[dict[str, Any], Field(description="Context for the code: the field at fault, the job id, a limit...")]


#: The shapes with examples (backend/api/docs.py puts them in the document as written).
EXAMPLED: tuple[type, ...] = (Cost, Job, StatusBody, HealthBody, ErrorBody)

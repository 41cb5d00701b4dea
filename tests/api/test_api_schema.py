"""The schema tells the truth: the answers have the shapes /openapi.json documents (backend/api/schemas.py),
and Schemathesis with every check (`schemathesis run --checks all`, as a user runs it) against a live
server with a token finds nothing but the refusals listed below, each by design.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter
from websockets.sync.client import connect

from backend.api.schemas import (
    EXAMPLED,
    GENERATE_EXAMPLES,
    JOB_EXAMPLE,
    STATUS_EXAMPLE,
    ErrorBody,
    Event,
    HealthBody,
    Job,
    JobFailedData,
    StatusBody,
)
from backend.jobs import public
from backend.jobs.request import GenerateRequest
from backend.store.jobs import JobRecord
from backend.store.models import Job as JobRow
from backend.store.models import JobStatus, JobStep, StepKind, StepStatus
from tests.support.jobs import local_job
from tests.support.server import Server
from tests.support.streams import ends_job

TOKEN = "schema-" + "t" * 24
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def holds(shape: Any, answer: httpx.Response | bytes) -> Any:
    """`answer`'s JSON, validated strictly against `shape` (no coercion; an undocumented key fails)."""
    content = answer.content if isinstance(answer, httpx.Response) else answer
    return TypeAdapter(shape).validate_json(content, strict=True)


# -- what public.py builds, in every branch, has the documented shape ------------------------------------


def a_job(**fields: Any) -> JobRecord:
    moment = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    job = JobRow(
        id="job_abc123",
        prompt="a lighthouse",
        provider="dalle3",
        video_provider="runway",
        image_size="1024x1024",
        video_duration=5,
        quality="high",
        seed=7,
        created_at=moment,
        updated_at=moment,
        **fields,
    )
    steps = (
        JobStep(
            job_id=job.id, kind=StepKind.IMAGE, status=StepStatus.COMPLETED, progress=100, started_at=moment, ended_at=moment
        ),
        JobStep(job_id=job.id, kind=StepKind.VIDEO, status=StepStatus.PENDING, log=["waiting"]),
    )
    return JobRecord(job, steps)


def test_the_job_and_its_events_have_the_documented_shape_in_every_branch():
    expired = datetime(2024, 2, 1, tzinfo=UTC)
    records = [
        a_job(),
        a_job(status=JobStatus.FAILED, error="Image generation failed: API quota exceeded"),
        a_job(
            status=JobStatus.COMPLETED,
            progress=100,
            image_path="a.png",
            video_path="a.mp4",
            image_model="dall-e-3",
            video_model="gen4_turbo",
            extra={"revisedPrompt": "a tall lighthouse", "runwayTaskId": "t1", "videoWidth": 1280, "videoHeight": 768},
        ),
        a_job(status=JobStatus.COMPLETED, image_path="a.png", media_expired_at=expired, extra={"someNewProviderKey": [1]}),
    ]
    for record in records:
        data = public.absolute_media_urls(public.job_data(record), "http://localhost:8000/", lambda path: path + "?s=1")
        holds(Job, json.dumps(data).encode())
        for type_, event_data in [
            ("job_update", public.job_update_data(record.job)),
            ("step_update", public.step_data(record.steps[0])),
            ("job_completed", public.job_completed_data(record.job)),
            ("job_failed", public.job_failed_data(record.job)),
            # a live preview's step_update (ComfyUI): its previewUrl made absolute and signed at the edge
            (
                "step_update",
                public.absolute_media_urls(
                    {**public.step_data(record.steps[0]), "previewUrl": public.preview_url(record.job.id, 3)},
                    "http://localhost:8000/",
                    lambda path: path + "?s=1",
                ),
            ),
        ]:
            holds(Event, json.dumps({"type": type_, "jobId": record.job.id, "data": event_data, "seq": 1}).encode())
    assert "mediaExpiredAt" in public.job_data(records[3])["metadata"]
    # The pipeline's job_failed on an internal error has no cost (backend/jobs/pipeline.py).
    holds(JobFailedData, b'{"id": "job_abc123", "status": "failed", "error": "internal error: boom"}')


def test_the_examples_have_the_documented_shape():
    for example in GENERATE_EXAMPLES.values():
        GenerateRequest.model_validate_json(json.dumps(example["value"]))
    holds(Job, json.dumps(JOB_EXAMPLE).encode())
    holds(StatusBody, json.dumps(STATUS_EXAMPLE).encode())
    for shape in EXAMPLED:
        for example in TypeAdapter(shape).json_schema()["examples"]:
            holds(shape, json.dumps(example).encode())


def test_an_undocumented_key_or_type_does_not_pass():
    """The check above can fail: a key the schema does not name, or a string where a number goes."""
    for wrong in ({**JOB_EXAMPLE, "owner": "alice"}, {**JOB_EXAMPLE, "progress": "100"}, {**JOB_EXAMPLE, "status": "done"}):
        with pytest.raises(ValueError):
            holds(Job, json.dumps(wrong).encode())


# -- a live server's answers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("schema") / "data",
        API_TOKEN=TOKEN,
        # Schema-valid jobs beyond these are refused (429, documented) rather than rendered.
        PROMPTREEL_RATE_LIMIT_PER_MINUTE="3",
        # Schemathesis sends made-up tokens on purpose (ignored_auth): not throttled here.
        PROMPTREEL_AUTH_FAILURES_PER_MINUTE="0",
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def completed_job(token_server: Server) -> dict[str, Any]:
    """A finished local job, and the /ws frames that told of it."""
    frames: list[dict[str, Any]] = []
    with connect(f"{token_server.ws_url}?token={TOKEN}", max_size=None) as ws, token_server.client() as api:
        job = api.post("/api/v1/generate", json=local_job("a lighthouse on a cliff at dusk"), headers=BEARER).json()
        while not frames or not ends_job(job["id"])(frames[-1]):
            frame = json.loads(ws.recv(timeout=120))
            if frame.get("jobId") == job["id"]:
                frames.append(frame)
    return {"id": job["id"], "frames": frames}


def test_live_answers_have_the_documented_shapes(token_server: Server, completed_job: dict[str, Any]):
    job_id = completed_job["id"]
    frames = completed_job["frames"]
    assert [frame["type"] for frame in frames][-1] == "job_completed"
    holds(list[Event], json.dumps(frames).encode())  # the /ws frames
    with token_server.client() as api:
        api.headers.update(BEARER)
        job = holds(Job, api.get(f"/api/v1/jobs/{job_id}"))
        assert job["status"] == "completed" and job["image_url"] and job["video_url"]
        listed = api.get("/api/v1/jobs", params={"limit": 5})
        assert int(listed.headers["X-Total-Count"]) >= 1
        holds(list[Job], listed)
        events = holds(list[Event], api.get(f"/api/v1/jobs/{job_id}/events"))
        assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
        holds(StatusBody, api.get("/api/v1/status"))
        holds(HealthBody, api.get("/health"))
        for refused in (
            api.get("/api/v1/jobs/job_nothere1234"),
            api.delete(f"/api/v1/jobs/{job_id}"),  # 409: finished
            api.get("/api/v1/jobs", params={"limit": 0}),
            api.get("/api/v1/jobs", headers={"Authorization": "Bearer wrong"}),
        ):
            assert refused.status_code >= 400
            holds(ErrorBody, refused)
        pending = api.post("/api/v1/generate", json=local_job("a lake at dawn"))
        holds(Job, pending)
        cancelled = api.delete(f"/api/v1/jobs/{pending.json()['id']}")
        assert holds(Job, cancelled)["status"] == "cancelled"


def test_the_routes_document_their_answers(token_server: Server):
    schema = httpx.get(f"{token_server.url}/openapi.json", timeout=30).json()

    def answer(path: str, method: str, status: str = "200") -> dict[str, Any]:
        return schema["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]

    job = {"$ref": "#/components/schemas/Job"}
    assert answer("/api/v1/generate", "post", "201") == job
    assert answer("/api/v1/jobs/{job_id}", "get") == job
    assert answer("/api/v1/jobs/{job_id}", "delete") == job
    assert answer("/api/v1/jobs", "get")["items"] == job
    assert answer("/api/v1/jobs/{job_id}/events", "get")["items"]["discriminator"]["propertyName"] == "type"
    assert answer("/api/v1/status", "get") == {"$ref": "#/components/schemas/StatusBody"}
    assert answer("/health", "get") == {"$ref": "#/components/schemas/HealthBody"}
    assert answer("/api/v1/jobs/{job_id}", "get", "404") == {"$ref": "#/components/schemas/ErrorBody"}
    assert "X-Total-Count" in schema["paths"]["/api/v1/jobs"]["get"]["responses"]["200"]["headers"]
    # The examples as written, nulls included (FastAPI leaves nulls out of the document).
    assert schema["components"]["schemas"]["Job"]["examples"] == [JOB_EXAMPLE]
    for shape in EXAMPLED:
        for example in schema["components"]["schemas"][shape.__name__]["examples"]:
            holds(shape, json.dumps(example).encode())
    # A signed link needs no header: no security is one of the download's alternatives.
    for method in ("get", "head"):
        assert {} in schema["paths"]["/api/v1/jobs/{job_id}/download/{type}"][method]["security"]
    preview = schema["paths"]["/api/v1/jobs/{job_id}/preview"]["get"]
    assert {} in preview["security"] and "image/jpeg" in preview["responses"]["200"]["content"]
    assert preview["responses"]["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


# -- Schemathesis, every check ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    check: str
    code: str
    operation: str
    message: str
    status: int | None
    request_body: Any
    response_body: Any

    def __str__(self) -> str:
        return (
            f"{self.code} {self.check} on {self.operation}: {self.message}\n"
            f"  request body {json.dumps(self.request_body, default=repr)[:300]}\n"  # an upload's body is bytes
            f"  answered {self.status} {str(self.response_body)[:300]}"
        )


#: The operations that create jobs: a batch refuses what generate refuses, for each of its jobs.
CREATES = ("POST /api/v1/generate", "POST /api/v1/batches", "POST /api/v1/jobs/{job_id}/animate")


def field_of(finding: Finding) -> str:
    """The field the 422 names, without the `jobs[i].` of a batch's job."""
    return re.sub(r"^jobs\[\d+\]\.", "", finding.response_body["details"]["field"])


def integral_float_in(finding: Finding) -> bool:
    """The field the 422 names holds a whole number written as a float (5.0)."""
    if not isinstance(finding.response_body, dict) or not isinstance(finding.request_body, dict):
        return False
    value: Any = finding.request_body
    for part in re.sub(r"\[(\d+)\]", r".\1", finding.response_body["details"]["field"]).split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            value = value.get(part) if isinstance(value, dict) else None
    return isinstance(value, float) and value.is_integer()


def wordless_or_nul_prompt(finding: Finding) -> bool:
    prompt = finding.request_body.get("prompt") if isinstance(finding.request_body, dict) else None
    return isinstance(prompt, str) and (not prompt.strip() or "\x00" in prompt)


def error_code(finding: Finding) -> str | None:
    return finding.response_body.get("code") if isinstance(finding.response_body, dict) else None


#: Refusals by design, each with why. Anything else Schemathesis reports fails the test.
BY_DESIGN: list[tuple[str, Callable[[Finding], bool]]] = [
    (
        "a provider this server has no key for is refused, 400 PROVIDER_UNAVAILABLE (docs/api.md, errors): "
        "which providers are configured is the server's, not the schema's",
        lambda f: (
            f.check == "positive_data_acceptance"
            and f.operation in CREATES
            and f.status == 400
            and error_code(f) == "PROVIDER_UNAVAILABLE"
        ),
    ),
    (
        "a webhook URL whose host resolves to a private address, or not at all, is refused, 422 WEBHOOK_URL_REFUSED "
        "(docs/api.md, webhooks): what a name resolves to is the DNS's, not the schema's",
        lambda f: (
            f.check == "positive_data_acceptance"
            and f.operation in CREATES
            and f.status == 422
            and error_code(f) == "WEBHOOK_URL_REFUSED"
        ),
    ),
    (
        "types are strict (docs/api.md): 5.0 is not 5, though JSON Schema counts it as an integer",
        lambda f: (
            f.check == "positive_data_acceptance"
            and f.operation in CREATES
            and f.status == 422
            and error_code(f) == "VALIDATION_ERROR"
            and integral_float_in(f)
        ),
    ),
    (
        "`settings.sourceImage` and `provider` go together (docs/api.md, your own picture): an upload id with an image "
        "provider, `upload` without one, or an id that is not the caller's upload answers 422 naming the field",
        lambda f: (
            f.check == "positive_data_acceptance"
            and f.operation in CREATES
            and f.status == 422
            and error_code(f) == "VALIDATION_ERROR"
            and field_of(f) in ("provider", "settings.sourceImage")
        ),
    ),
    (
        "an upload is judged by its bytes (docs/api.md, errors): drawn bytes are no picture (415, 422 IMAGE_INVALID), "
        "and a multipart body with other parts than `file` is refused (400, 422 naming `file`)",
        lambda f: (
            f.check == "positive_data_acceptance"
            and f.operation == "POST /api/v1/uploads"
            and (f.status, error_code(f))
            in ((415, "UNSUPPORTED_MEDIA_TYPE"), (422, "IMAGE_INVALID"), (400, "BAD_REQUEST"), (422, "VALIDATION_ERROR"))
        ),
    ),
]
BY_DESIGN += [
    (
        "what each model takes is the model catalog's (GET /api/v1/models), not the schema's: a model of another "
        "provider or kind, or a size, quality or video length the chosen model does not make, answers 422 naming the field",
        lambda f: (
            f.check == "positive_data_acceptance"
            and f.operation in CREATES
            and f.status == 422
            and error_code(f) == "VALIDATION_ERROR"
            and field_of(f).split(" ")[0]
            in ("settings.imageModel", "settings.videoModel", "settings.videoDuration", "settings.imageSize", "settings.quality")
        ),
    ),
    (
        "a retired model, or one without a published price, is refused before anything is queued (400 MODEL_UNAVAILABLE, "
        "PRICE_UNKNOWN; docs/api.md, errors): which models can run is the catalog's and the provider's",
        lambda f: (
            f.check == "positive_data_acceptance"
            and f.operation in CREATES
            and f.status == 400
            and error_code(f) in ("MODEL_UNAVAILABLE", "PRICE_UNKNOWN")
        ),
    ),
]
BY_DESIGN += [
    (
        "only a completed image-only job is animated (docs/api.md, batches): 409 JOB_NOT_ANIMATABLE for any other job, "
        "whatever the body",
        lambda f: (
            f.check == "positive_data_acceptance"
            and f.operation == "POST /api/v1/jobs/{job_id}/animate"
            and f.status == 409
            and error_code(f) == "JOB_NOT_ANIMATABLE"
        ),
    ),
    (
        "`settings.imageOnly` makes an image: with the user's own picture (`settings.sourceImage`) there is none to "
        "make, 422 naming the field",
        lambda f: (
            f.check == "positive_data_acceptance"
            and f.operation in CREATES
            and f.status == 422
            and error_code(f) == "VALIDATION_ERROR"
            and field_of(f) == "settings.imageOnly"
        ),
    ),
]
BY_DESIGN += [
    (
        "a batch of more jobs than the rate limit allows in a minute could never be made (docs/api.md, batches): "
        "422 naming `count` or `jobs`, rather than a 429 to wait out; the limit is the server's, not the schema's",
        lambda f: (
            f.check == "positive_data_acceptance"
            and f.operation == "POST /api/v1/batches"
            and f.status == 422
            and error_code(f) == "VALIDATION_ERROR"
            and field_of(f) in ("count", "jobs")
            and "rate limit" in str(f.response_body.get("error"))
        ),
    ),
]
#: Cases per operation in the fuzzing phase (the coverage phase adds its own); about 30 s in all.
MAX_EXAMPLES = 25


def decoded(payload: dict[str, Any] | None) -> Any:
    if not payload or "$base64" not in payload:
        return None
    raw = base64.b64decode(payload["$base64"])
    try:
        return json.loads(raw)
    except ValueError:
        return raw[:300]


def findings_of(ndjson: Path) -> list[Finding]:
    """Every failed check in Schemathesis's NDJSON report, with the request and answer it failed on."""
    found = []
    for line in ndjson.read_text().splitlines():
        event = json.loads(line)
        recorder = event.get("ScenarioFinished", {}).get("recorder", {})
        for case_id, checks in recorder.get("checks", {}).items():
            for check in checks:
                if check["status"] != "failure":
                    continue
                failure = check["failure_info"]["failure"]
                interaction = recorder.get("interactions", {}).get(case_id) or {}
                response = interaction.get("response") or {}
                found.append(
                    Finding(
                        check=check["name"],
                        code=failure["code"],
                        operation=failure["operation"],
                        message=failure["message"],
                        status=response.get("status_code"),
                        request_body=decoded((interaction.get("request") or {}).get("body")),
                        response_body=decoded(response.get("content")),
                    )
                )
    return found


def test_schemathesis_with_every_check_finds_only_refusals_by_design(
    token_server: Server, completed_job: dict[str, Any], tmp_path: Path
):
    # The job routes get a real job's id (a drawn one only ever reaches the 404).
    (tmp_path / "schemathesis.toml").write_text(f'[parameters]\njob_id = "{completed_job["id"]}"\n')
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        "schemathesis.toml",
        "run",
        f"{token_server.url}/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "7",
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--no-color",
        "--report",
        "json,ndjson",
        "--report-dir",
        str(tmp_path),
    ]
    # In tmp_path: Schemathesis keeps its crash files in the working directory.
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    reports = list(tmp_path.glob("*.json"))
    assert reports, f"no report:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    report = json.loads(reports[0].read_text())
    assert report["errors"] == [], run.stdout[-5000:]
    operations = httpx.get(f"{token_server.url}/openapi.json", timeout=30).json()["paths"]
    count = sum(len(methods) for methods in operations.values())
    assert report["operations"]["tested"] == report["operations"]["total"] == count, report["operations"]
    findings = findings_of(next(tmp_path.glob("*.ndjson")))
    unexplained = [finding for finding in findings if not any(allowed(finding) for _, allowed in BY_DESIGN)]
    assert not unexplained, f"{len(unexplained)} finding(s) that are not by design:\n" + "\n".join(map(str, unexplained[:20]))
    print(f"schemathesis: {report['test_cases']['generated']} cases, {len(findings)} finding(s), all by design")
    # Every failure the summary counts was read above (the NDJSON holds them all).
    assert {failure["code"] for failure in report["failures"]} == {finding.code for finding in findings}

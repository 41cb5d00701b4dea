"""Whole jobs with the remote providers, through the real server in a subprocess, against fake
OpenAI, Replicate and Runway servers that it reaches only through the base-URL variables."""

from __future__ import annotations

import io
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from PIL import Image

from tests.fakes import FakeOpenAI, FakeReplicate, FakeRunway, Hold, provider_env
from tests.fakes import fake_openai as openai_replies
from tests.fakes import fake_replicate as replicate_replies
from tests.fakes import fake_runway as runway_replies
from tests.support.server import Server
from tests.support.streams import ends_job, open_stream

POLL = {"PROMPTREEL_POLL_INTERVAL": "0.05"}


class Fakes:
    def __init__(self) -> None:
        self.openai = FakeOpenAI().start()
        self.replicate = FakeReplicate().start()
        self.runway = FakeRunway().start()

    def env(self, **overrides: str) -> dict[str, str]:
        return {**provider_env(self.openai, self.replicate, self.runway), **POLL, **overrides}  # type: ignore[arg-type]

    def stop(self) -> None:
        for fake in (self.openai, self.replicate, self.runway):
            fake.stop()


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    started = Fakes()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def studio(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server wired to all three fakes, for the jobs that only need the fakes' normal behaviour
    or behaviour scripted for their own next request."""
    server = Server(tmp_path_factory.mktemp("providers") / "data", **fakes.env()).start()
    yield server
    server.stop()


def job_request(
    prompt: str,
    provider: str,
    video_provider: str,
    size: str = "1024x1024",
    quality: str = "standard",
    duration: int = 5,
    seed: int = 4242,
) -> dict[str, Any]:
    settings = {"imageSize": size, "videoDuration": duration, "quality": quality, "seed": seed, "videoProvider": video_provider}
    return {"prompt": prompt, "provider": provider, "settings": settings}


async def run_job(server: Server, request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Submit a job, await its last event; returns (that event, the job as GET answers it)."""
    stream = await open_stream(server)
    try:
        with server.client() as api:
            response = api.post("/api/v1/generate", json=request)
            assert response.status_code == 201, response.text
            job = response.json()
            end = await stream.until(ends_job(job["id"]))
            return end, api.get(f"/api/v1/jobs/{job['id']}").json()
    finally:
        await stream.connection.close()


def media(server: Server, job_id: str, kind: str) -> bytes:
    with server.client() as api:
        response = api.get(f"/api/v1/jobs/{job_id}/download/{kind}")
    assert response.status_code == 200, response.text
    return response.content


def gpt_image_2_cost(usage: dict) -> float:
    """gpt-image-2's price of a reported usage: $5 / $8 / $30 per million text-in / image-in / image-out tokens."""
    details = usage["input_tokens_details"]
    return round((details["text_tokens"] * 5 + details["image_tokens"] * 8 + usage["output_tokens"] * 30) / 1_000_000, 6)


def video_size(data: bytes) -> tuple[int, int, int]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return stream.codec_context.width, stream.codec_context.height, frames


@pytest.mark.parametrize(
    ("provider", "video_provider", "size", "quality", "duration", "image_cost", "video_cost"),
    [
        ("dalle3", "runway", "1792x1024", "high", 10, "usage", 0.50),
        ("flux1", "runway", "1024x1792", "high", 5, 0.04, 0.25),
        ("dalle3", "local", "1024x1024", "standard", 5, "usage", 0.0),
        ("flux1", "local", "1024x1024", "standard", 5, 0.003, 0.0),
        ("local", "runway", "1024x1024", "standard", 5, 0.0, 0.25),
    ],
    ids=["dalle3+runway", "flux1+runway", "dalle3+local", "flux1+local", "local+runway"],
)
async def test_each_pairing_completes_with_the_right_requests_files_and_costs(
    studio: Server, fakes: Fakes, provider, video_provider, size, quality, duration, image_cost, video_cost
):
    prompt = f"a lighthouse in a storm, {provider} then {video_provider}"
    end, job = await run_job(studio, job_request(prompt, provider, video_provider, size, quality, duration))
    assert end["type"] == "job_completed", job
    if image_cost == "usage":  # gpt-image-2 is priced from the tokens OpenAI reported
        image_cost = gpt_image_2_cost(job["metadata"]["imageUsage"])
    cost = {"imageGeneration": image_cost, "videoGeneration": video_cost, "total": round(image_cost + video_cost, 4)}
    assert end["data"]["cost"] == cost and job["cost"] == cost
    assert job["status"] == "completed" and job["progress"] == 100 and job["error"] is None

    width, height = (int(part) for part in size.split("x"))
    with Image.open(io.BytesIO(media(studio, job["id"], "image"))) as image:
        assert image.format == "PNG"
        if provider == "dalle3":
            assert image.size == (width, height)
    if provider == "dalle3":
        [call] = [c for c in fakes.openai.seen("POST", "/v1/images/generations") if c.json["prompt"] == prompt]
        assert call.json == {
            "model": "gpt-image-2",
            "prompt": prompt,
            "size": size,
            "quality": "high" if quality == "high" else "medium",
            "n": 1,
            "output_format": "png",
        }
        assert job["metadata"]["imageUsage"]["output_tokens"] > 0
        assert (job["provider"], job["metadata"]["imageProvider"], job["metadata"]["imageModel"]) == (
            "dalle3",
            "openai",
            "gpt-image-2",
        )
    if provider == "flux1":
        model = "black-forest-labs/flux-1.1-pro" if quality == "high" else "black-forest-labs/flux-schnell"
        [prediction] = [p for p in fakes.replicate.predictions.values() if p.input["prompt"] == prompt]
        assert prediction.model == model and job["metadata"]["imageModel"] == model
        assert prediction.input == {
            "prompt": prompt,
            "aspect_ratio": {"1024x1024": "1:1", "1024x1792": "9:16"}[size],
            "seed": 4242,
            "output_format": "png",
        }
        assert job["metadata"]["replicatePredictionId"] == prediction.id
    if video_provider == "runway":
        [task] = [t for t in fakes.runway.tasks.values() if t.body.get("promptText") == prompt]
        ratio = {"1792x1024": "1280:720", "1024x1792": "720:1280", "1024x1024": "960:960"}[size]
        assert (task.body["model"], task.body["ratio"], task.body["duration"], task.body["seed"]) == (
            "gen4_turbo",
            ratio,
            duration,
            4242,
        )
        assert task.body["promptImage"].startswith("data:image/")
        expected = (*(int(part) for part in ratio.split(":")), duration * 24)
        assert video_size(media(studio, job["id"], "video")) == expected
        assert job["metadata"]["videoModel"] == "gen4_turbo" and job["metadata"]["runwayTaskId"] == task.id
        video_log = job["steps"][1]["log"]
        assert any(f"remote id {task.id}" in line for line in video_log), video_log
    else:
        assert video_size(media(studio, job["id"], "video"))[2] == duration * 24


@pytest.mark.parametrize(
    ("provider", "script", "error", "image_cost", "video_cost"),
    [
        (
            "dalle3",
            lambda f: f.openai.script("images", openai_replies.content_policy()),
            "Image generation failed: OpenAI refused the prompt under its content policy",
            0.0,
            0.0,
        ),
        (
            "dalle3",
            lambda f: f.runway.outcomes.append("fail:SAFETY.INPUT.IMAGE"),
            "Video generation failed: Runway refused the input image (SAFETY.INPUT.IMAGE)",
            "usage",
            0.0,
        ),
        # The prediction (the task) succeeded, and was paid for, before its output failed to arrive:
        # the failed job's cost says so (money spent is never hidden).
        (
            "flux1",
            lambda f: f.replicate.outcomes.append("output_gone"),
            "Image generation failed: Replicate's output is no longer available (404)",
            0.003,
            0.0,
        ),
        (
            "flux1",
            lambda f: f.runway.outcomes.append("output_not_video"),
            "Video generation failed: Runway's output is not a playable video",
            0.003,
            0.25,
        ),
        (
            "dalle3",
            lambda f: f.runway.script("create", *[runway_replies.shedding_load(503) for _ in range(4)]),
            "Video generation failed: Runway kept failing while starting the video task: 503 Service Unavailable (4 attempts)",
            "usage",
            0.0,
        ),
    ],
    ids=["content-policy", "runway-safety", "flux-output-expired", "runway-output-not-video", "runway-5xx-exhausted"],
)
async def test_failures_end_the_job_with_a_plain_reason_and_the_cost_of_what_completed(
    studio: Server, fakes: Fakes, provider, script, error, image_cost, video_cost
):
    script(fakes)
    end, job = await run_job(studio, job_request(f"a failing job: {error[:30]}", provider, "runway"))
    assert end["type"] == "job_failed", job
    assert job["error"].startswith(error), job["error"]
    if image_cost == "usage":
        image_cost = gpt_image_2_cost(job["metadata"]["imageUsage"])
    total = round(image_cost + video_cost, 4)
    assert end["data"]["cost"] == job["cost"] == {"imageGeneration": image_cost, "videoGeneration": video_cost, "total": total}
    failed = [step for step in job["steps"] if step["status"] == "failed"]
    reason = job["error"].split("failed: ", 1)[1]
    assert len(failed) == 1 and any(f"failed: {reason}" in line for line in failed[0]["log"]), failed[0]["log"]
    charged_for_the_failed_step = video_cost if job["error"].startswith("Video") else image_cost
    assert ("the provider had finished this step: charged $" in failed[0]["log"][-1]) == (charged_for_the_failed_step > 0), (
        failed[0]["log"]
    )


async def test_429_then_success_is_logged_in_the_step(studio: Server, fakes: Fakes):
    fakes.replicate.script("create", replicate_replies.throttled(retry_after=1))
    end, job = await run_job(studio, job_request("a quiet harbour at dawn", "flux1", "local"))
    assert end["type"] == "job_completed", job
    image_log = job["steps"][0]["log"]
    assert any("attempt 2/4" in line and "429" in line for line in image_log), image_log


@pytest.mark.parametrize("step", ["image", "video"])
async def test_cancel_during_a_remote_step_cancels_the_remote_work(studio: Server, fakes: Fakes, step: str):
    stream = await open_stream(studio)
    with studio.client() as api:
        if step == "image":  # FLUX.1 prediction held in `processing`
            fakes.replicate.outcomes.append("hold")
            request = job_request("a slow forest, cancelled while painting", "flux1", "runway")
        else:  # Runway task held in RUNNING
            fakes.runway.outcomes.append("hold")
            request = job_request("a slow river, cancelled while filming", "dalle3", "runway")
        job = api.post("/api/v1/generate", json=request).json()
        if step == "image":
            prediction = await fakes.replicate.until(
                lambda: next(
                    (
                        p
                        for p in fakes.replicate.predictions.values()
                        if p.input["prompt"] == request["prompt"] and p.status == "processing"
                    ),
                    None,
                )
            )
            cancel_path = f"/v1/predictions/{prediction.id}/cancel"
        else:
            task = await fakes.runway.until(
                lambda: next(
                    (
                        t
                        for t in fakes.runway.tasks.values()
                        if t.body.get("promptText") == request["prompt"] and t.status == "RUNNING"
                    ),
                    None,
                )
            )
            cancel_path = f"/v1/tasks/{task.id}"
        response = api.delete(f"/api/v1/jobs/{job['id']}")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        end = await stream.until(ends_job(job["id"]))
        assert end["type"] == "job_update" and end["data"]["status"] == "cancelled"
        if step == "image":
            assert len(fakes.replicate.seen("POST", cancel_path)) == 1
            assert prediction.status == "canceled"
            assert not [t for t in fakes.runway.tasks.values() if t.body.get("promptText") == request["prompt"]]
        else:
            assert len(fakes.runway.seen("DELETE", cancel_path)) == 1
            assert task.status == "CANCELLED"
        final = api.get(f"/api/v1/jobs/{job['id']}").json()
        log = final["steps"][0 if step == "image" else 1]["log"]
        assert any("cancelled at" in line for line in log), log
    await stream.connection.close()


async def test_restart_while_a_runway_task_runs_polls_the_same_task(tmp_path: Path):
    fakes = Fakes()
    try:
        fakes.runway.outcomes.append("hold")
        data_dir = tmp_path / "data"
        first = Server(data_dir, **fakes.env()).start()
        try:
            with first.client() as api:
                job = api.post(
                    "/api/v1/generate", json=job_request("a train through snow, across a restart", "dalle3", "runway")
                ).json()
            # Polling has begun, so the task id is stored; then the server dies without warning.
            [task] = await fakes.runway.until(lambda: [t for t in fakes.runway.tasks.values() if t.status == "RUNNING"] or None)
            await fakes.runway.until_request("GET", f"/v1/tasks/{task.id}", count=2)
        finally:
            first.stop(signal.SIGKILL)

        second = Server(data_dir, port=first.port, **fakes.env()).start()
        try:
            stream = await open_stream(second)
            fakes.runway.release(task.id)
            with second.client() as api:
                state = api.get(f"/api/v1/jobs/{job['id']}").json()
                if state["status"] != "completed":
                    end = await stream.until(ends_job(job["id"]))
                    assert end["type"] == "job_completed", end
                final = api.get(f"/api/v1/jobs/{job['id']}").json()
            await stream.connection.close()
        finally:
            second.stop()
        assert final["status"] == "completed", final
        assert len(fakes.runway.seen("POST", "/v1/image_to_video")) == 1, "the restarted job paid for a second video"
        assert len(fakes.openai.seen("POST", "/v1/images/generations")) == 1, "the image was made again"
        image_cost = gpt_image_2_cost(final["metadata"]["imageUsage"])
        assert final["cost"] == {"imageGeneration": image_cost, "videoGeneration": 0.25, "total": round(image_cost + 0.25, 4)}
        video_log = final["steps"][1]["log"]
        assert any("resumed after a restart" in line and task.id in line for line in video_log), video_log
        assert any(f"polling Runway task {task.id} again" in line for line in video_log), video_log
    finally:
        fakes.stop()


async def test_status_reports_keys_that_providers_reject(tmp_path: Path):
    fakes = Fakes()
    try:
        hold = Hold()
        fakes.replicate.script("account", hold)  # Replicate's key check never answers
        server = Server(tmp_path / "data", **fakes.env(RUNWAYML_API_SECRET="key_wrong")).start()
        try:
            with server.client() as api:
                started = time.monotonic()
                status = api.get("/api/v1/status").json()
                assert time.monotonic() - started < 1.5, "the status waited on a key check"
                assert status["dalle3_available"] is True
                assert status["flux1_available"] is True  # unknown yet: stays available
                assert status["runway_available"] is False  # Runway answered 401 to GET /v1/organization
                assert fakes.runway.seen("GET", "/v1/organization")[0].headers["x-runway-version"] == "2024-11-06"

                # A job for a provider that refused its key is refused at once, with the reason; nothing is stored.
                response = api.post("/api/v1/generate", json=job_request("a key that does not work", "local", "runway"))
                assert response.status_code == 400, response.text
                body = response.json()
                assert body["code"] == "PROVIDER_UNAVAILABLE" and body["details"]["missing"] == "RUNWAYML_API_SECRET"
                assert "Runway rejected the API secret (401)" in body["error"]
                assert api.get("/api/v1/jobs").headers["X-Total-Count"] == "0"
        finally:
            hold.release()
            server.stop()
    finally:
        fakes.stop()


async def test_a_job_that_meets_a_rejected_key_marks_the_provider_unavailable(tmp_path: Path):
    fakes = Fakes()
    try:
        server = Server(tmp_path / "data", **fakes.env()).start()
        try:
            with server.client() as api:
                assert api.get("/api/v1/status").json()["dalle3_available"] is True  # the key check passed
            fakes.openai.key = "sk-rotated"  # the key is revoked after the check: the job meets it first
            end, job = await run_job(server, job_request("an image the key cannot buy", "dalle3", "local"))
            assert end["type"] == "job_failed"
            assert job["error"] == "Image generation failed: OpenAI rejected the API key (401): check OPENAI_API_KEY"
            assert job["cost"]["total"] == 0.0
            with server.client() as api:
                assert api.get("/api/v1/status").json()["dalle3_available"] is False
        finally:
            server.stop()
    finally:
        fakes.stop()


def test_fakes_answer_like_the_real_apis_without_a_key(fakes: Fakes):
    assert httpx.post(f"{fakes.openai.base_url}/images/generations", json={"prompt": "x"}).status_code == 401
    replicate = httpx.post(f"{fakes.replicate.url}/v1/models/black-forest-labs/flux-schnell/predictions", json={"input": {}})
    assert replicate.status_code == 401 and replicate.json()["title"] == "Unauthenticated"
    runway = httpx.get(f"{fakes.runway.url}/v1/tasks/nope")
    assert runway.status_code == 401 and "error" in runway.json()
    invalid = httpx.post(
        f"{fakes.replicate.url}/v1/models/black-forest-labs/flux-schnell/predictions",
        headers={"Authorization": f"Bearer {fakes.replicate.key}"},
        json={"input": {"prompt": "x", "aspect_ratio": "16:10"}},
    )
    assert invalid.status_code == 422 and invalid.json()["invalid_fields"][0]["field"] == "input.aspect_ratio"

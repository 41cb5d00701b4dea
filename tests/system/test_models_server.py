"""Issue 14's "Done when", through the real server in a subprocess against fake OpenAI, Replicate
and Runway servers that speak their real APIs: models chosen per job, the guide's `dalle3`
running gpt-image-2 priced from its usage, Runway gen4.5 for 7 s, durations and retired models
refused before anything is queued, GET /api/v1/models, a model that disappears at run time,
a model added by a user's catalog file running on Replicate, and the current Replicate and Runway
models (FLUX.2, Wan image-to-video, Veo 3.1) running at their catalog prices."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.media.checks import probe_video
from tests.fakes import FakeOpenAI, FakeReplicate, FakeRunway, provider_env
from tests.support.server import Server
from tests.support.streams import ends_job, open_stream

POLL = {"PROMPTREEL_POLL_INTERVAL": "0.05"}
GUIDE_REQUEST = {  # the integration guide's own example
    "prompt": "A majestic mountain landscape at golden hour",
    "provider": "dalle3",
    "settings": {"imageSize": "1024x1024", "videoDuration": 10, "quality": "high", "seed": 12345},
}
PIXEL_ART = """
[[models]]
id = "acme/pixel-art"
provider = "replicate"
kind = "image"
name = "Pixel art"
sizes = { "1024x1024" = "1024x1024", "1792x1024" = "1792x1024", "1024x1792" = "1024x1792" }
[models.input]
prompt = "prompt"
width = "width"
height = "height"
seed = "seed"
fixed = { style = "8-bit" }
[models.price]
unit = "image"
perImage = { "*" = { "*" = 0.011 } }
source = "https://replicate.com/acme/pixel-art"
read = 2026-12-01
"""
PIXEL_ART_SCHEMA = {
    "prompt": {"type": str, "required": True},
    "width": {"type": int, "min": 256, "max": 2048},
    "height": {"type": int, "min": 256, "max": 2048},
    "seed": {"type": int},
    "style": {"enum": ["8-bit", "16-bit"]},
}


class Fakes:
    def __init__(self) -> None:
        self.openai = FakeOpenAI().start()
        self.replicate = FakeReplicate().start()
        self.runway = FakeRunway().start()
        self.replicate.add_model("acme/pixel-art", PIXEL_ART_SCHEMA)

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
def server(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("models")
    catalog = folder / "my-models.toml"
    catalog.write_text(PIXEL_ART)
    started = Server(folder / "data", **fakes.env(PROMPTREEL_MODELS_FILE=str(catalog))).start()
    yield started
    started.stop()


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


def refused(server: Server, request: dict[str, Any]) -> dict[str, Any]:
    """POST a request that must be refused; checks nothing was stored, returns (status, body)."""
    with server.client() as api:
        before = api.get("/api/v1/jobs").headers["X-Total-Count"]
        response = api.post("/api/v1/generate", json=request)
        assert response.status_code in (400, 422), response.text
        assert api.get("/api/v1/jobs").headers["X-Total-Count"] == before, "a refused request stored a job"
        return {"status": response.status_code, **response.json()}


def gpt_image_2_cost(usage: dict[str, Any]) -> float:
    """$5 / $8 / $30 per million text-in / image-in / image-out tokens (the catalog's gpt-image-2 rule)."""
    details = usage["input_tokens_details"]
    return round((details["text_tokens"] * 5 + details["image_tokens"] * 8 + usage["output_tokens"] * 30) / 1_000_000, 6)


async def test_the_guides_dalle3_request_runs_gpt_image_2_priced_from_its_usage(server: Server, fakes: Fakes):
    end, job = await run_job(server, {**GUIDE_REQUEST, "settings": {**GUIDE_REQUEST["settings"], "videoProvider": "local"}})
    assert end["type"] == "job_completed", job
    assert job["provider"] == "dalle3"  # echoed as sent
    metadata = job["metadata"]
    assert (metadata["imageProvider"], metadata["imageModel"]) == ("openai", "gpt-image-2")
    [call] = [c for c in fakes.openai.seen("POST", "/v1/images/generations") if c.json["prompt"] == GUIDE_REQUEST["prompt"]]
    assert (call.json["model"], call.json["quality"], call.json["size"]) == ("gpt-image-2", "high", "1024x1024")
    usage = metadata["imageUsage"]
    assert usage["output_tokens"] > 0 and usage["input_tokens_details"]["text_tokens"] > 0
    assert job["cost"]["imageGeneration"] == gpt_image_2_cost(usage)
    assert job["cost"]["imageGeneration"] != 0.19, "the per-image estimate, not the usage, was recorded"


async def test_openai_with_runway_gen4_5_for_7_seconds_costs_7_times_12_cents(server: Server, fakes: Fakes):
    request = {
        "prompt": "a harbour at dawn, seven seconds",
        "provider": "openai",
        "settings": {"videoProvider": "runway", "videoModel": "gen4.5", "videoDuration": 7, "seed": 3},
    }
    end, job = await run_job(server, request)
    assert end["type"] == "job_completed", job
    [task] = [t for t in fakes.runway.tasks.values() if t.body.get("promptText") == request["prompt"]]
    assert (task.body["model"], task.body["duration"]) == ("gen4.5", 7)
    assert job["cost"]["videoGeneration"] == round(7 * 0.12, 4) == 0.84
    assert (job["metadata"]["videoModel"], job["metadata"]["imageModel"]) == ("gen4.5", "gpt-image-2")
    assert job["cost"]["total"] == round(job["cost"]["imageGeneration"] + 0.84, 4)


def test_a_duration_the_video_model_does_not_allow_is_refused_with_the_allowed_ones(server: Server):
    body = refused(
        server,
        {
            "prompt": "x",
            "provider": "openai",
            "settings": {"videoProvider": "runway", "videoModel": "veo3.1", "videoDuration": 5},
        },
    )
    assert (body["status"], body["code"], body["details"]["field"]) == (422, "VALIDATION_ERROR", "settings.videoDuration")
    assert "veo3.1 makes videos of 4, 6, 8 seconds" in body["error"]
    # 5 and 10 keep working with the defaults; 7 does not with gen4_turbo
    body = refused(server, {"prompt": "x", "provider": "local", "settings": {"videoProvider": "runway", "videoDuration": 7}})
    assert body["details"]["field"] == "settings.videoDuration" and "gen4_turbo makes videos of 5, 10 seconds" in body["error"]


@pytest.mark.parametrize(("model", "day"), [("dall-e-3", "2026-05-12"), ("gpt-image-1", "2026-10-23")])
def test_a_retired_model_is_refused_naming_its_replacement(server: Server, model: str, day: str):
    body = refused(server, {**GUIDE_REQUEST, "settings": {**GUIDE_REQUEST["settings"], "imageModel": model}})
    assert (body["status"], body["code"]) == (400, "MODEL_UNAVAILABLE")
    assert body["details"] == {
        "field": "settings.imageModel",
        "model": model,
        "reason": f"retired on {day}",
        "replacement": "gpt-image-2",
    }
    assert "choose gpt-image-2" in body["error"]


@pytest.mark.parametrize(
    ("settings", "field", "words"),
    [
        ({"imageModel": "dall-e-4"}, "settings.imageModel", "unknown model 'dall-e-4'"),
        ({"imageModel": "gen4.5"}, "settings.imageModel", "'gen4.5' is a runway video model, not a openai image model"),
        ({"videoModel": "gpt-image-2", "videoProvider": "runway"}, "settings.videoModel", "not a runway video model"),
        ({"imageModel": "gpt-image-2", "quality": "ultra"}, "settings.quality", ""),
    ],
)
def test_unknown_or_mismatched_models_are_a_422_naming_the_field(server: Server, settings: dict, field: str, words: str):
    body = refused(server, {"prompt": "x", "provider": "openai", "settings": settings})
    assert (body["status"], body["code"], body["details"]["field"]) == (422, "VALIDATION_ERROR", field)
    assert words in body["error"]


def test_the_models_route_lists_the_catalog_with_availability(server: Server):
    with server.client() as api:
        models = {model["id"]: model for model in api.get("/api/v1/models").json()}
        video = api.get("/api/v1/models", params={"kind": "video", "provider": "runway"}).json()
        unavailable = api.get("/api/v1/models", params={"available": "false"}).json()
        aliased = api.get("/api/v1/models", params={"provider": "dalle3"}).json()
        bad = api.get("/api/v1/models", params={"kind": "audio"})
    gpt = models["gpt-image-2"]
    assert gpt["default"] and gpt["available"] and gpt["reason"] is None and gpt["provider"] == "openai"
    assert gpt["price"]["unit"] == "token" and gpt["price"]["tokens"] == {
        "textInput": 5.0,
        "imageInput": 8.0,
        "imageOutput": 30.0,
    }
    assert gpt["price"]["source"].startswith("https://") and gpt["price"]["read"]
    assert models["dall-e-3"]["available"] is False and models["dall-e-3"]["reason"] == "retired on 2026-05-12"
    assert models["dall-e-3"]["replacement"] == "gpt-image-2" and models["dall-e-3"]["retiresOn"] == "2026-05-12"
    assert models["acme/pixel-art"]["available"] and models["acme/pixel-art"]["input"]["width"] == "width"  # the user's file
    assert models["gen4.5"]["durations"] == list(range(2, 11)) and models["gen4.5"]["price"]["usdPerSecond"] == 0.12
    assert {model["id"] for model in video} == {"gen4.5", "gen4_turbo", "veo3.1", "veo3.1_fast"}
    assert models["veo3.1"]["price"]["usdPerSecond"] == 0.4 and models["veo3.1"]["durations"] == [4, 6, 8]
    assert models["veo3.1_fast"]["price"]["usdPerSecond"] == 0.15
    assert models["gpt-image-1"]["available"] is False and models["gpt-image-1"]["reason"] == "retired on 2026-10-23"
    flux2 = models["black-forest-labs/flux-2-pro"]
    assert flux2["available"] and flux2["price"]["perImage"] == {"*": {"*": 0.03}} and flux2["input"]["aspectRatio"]
    assert models["black-forest-labs/flux-2-max"]["price"]["perImage"] == {"*": {"*": 0.07}}
    wan = models["wan-video/wan-2.5-i2v"]
    assert wan["default"] and wan["available"] and wan["price"]["usdPerSecond"] == 0.1  # the built-in price
    assert "dall-e-3" in {model["id"] for model in unavailable} and all(not model["available"] for model in unavailable)
    assert {model["provider"] for model in aliased} == {"openai"}
    assert bad.status_code == 422 and bad.json()["code"] == "VALIDATION_ERROR"


async def test_a_model_shut_down_after_the_job_was_made_fails_it_plainly_and_is_marked(server: Server, fakes: Fakes):
    fakes.openai.retire("gpt-image-1.5")
    request = {"prompt": "a model that vanished", "provider": "openai", "settings": {"imageModel": "gpt-image-1.5"}}
    stream = await open_stream(server)  # before the job exists: its failure may come at once
    try:
        with server.client() as api:
            body = {**request, "settings": {**request["settings"], "videoProvider": "local"}}
            response = api.post("/api/v1/generate", json=body)
        if response.status_code == 201:  # the background model check had not answered yet: the job meets the 404
            end = await stream.until(ends_job(response.json()["id"]))
    finally:
        await stream.connection.close()
    if response.status_code == 201:
        assert end["type"] == "job_failed", end
        error = end["data"]["error"]
        assert error.startswith("Image generation failed: OpenAI has no model 'gpt-image-1.5'"), error
        assert (
            "does not exist or you do not have access to it" in error
            and "choose gpt-image-2, or update the model catalog" in error
        )
        assert "BASE_URL" not in error
    else:  # the check answered first: refused before anything was queued
        assert response.status_code == 400 and response.json()["code"] == "MODEL_UNAVAILABLE", response.text
    with server.client() as api:
        [model] = [m for m in api.get("/api/v1/models", params={"provider": "openai"}).json() if m["id"] == "gpt-image-1.5"]
        again = api.post("/api/v1/generate", json=request)
    assert model["available"] is False and model["reason"].startswith("OpenAI answered that the model does not exist (404")
    assert again.status_code == 400 and again.json()["code"] == "MODEL_UNAVAILABLE"
    assert "choose another model" in again.json()["error"] or "choose gpt-image-2" in again.json()["error"]


async def test_a_model_from_the_users_catalog_file_runs_on_replicate(server: Server, fakes: Fakes):
    request = {
        "prompt": "a castle in pixels",
        "provider": "replicate",
        "settings": {"imageModel": "acme/pixel-art", "imageSize": "1792x1024", "videoProvider": "local", "seed": 99},
    }
    end, job = await run_job(server, request)
    assert end["type"] == "job_completed", job
    [prediction] = [p for p in fakes.replicate.predictions.values() if p.input.get("prompt") == request["prompt"]]
    assert prediction.model == "acme/pixel-art"
    assert prediction.input == {"prompt": request["prompt"], "width": 1792, "height": 1024, "seed": 99, "style": "8-bit"}
    assert (job["metadata"]["imageProvider"], job["metadata"]["imageModel"]) == ("replicate", "acme/pixel-art")
    assert job["cost"] == {"imageGeneration": 0.011, "videoGeneration": 0.0, "total": 0.011}


def test_the_flux1_alias_runs_replicates_default_model(server: Server):
    with server.client() as api:
        response = api.post(
            "/api/v1/generate", json={"prompt": "fog", "provider": "flux1", "settings": {"videoProvider": "local"}}
        )
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["provider"] == "flux1"
    assert (job["metadata"]["imageProvider"], job["metadata"]["imageModel"]) == ("replicate", "black-forest-labs/flux-schnell")


async def test_an_image_to_video_model_on_replicate_animates_the_image(server: Server, fakes: Fakes, tmp_path: Path):
    request = {
        "prompt": "the sea breathes under the cliffs",
        "provider": "local",
        "settings": {"videoProvider": "replicate", "videoDuration": 10, "seed": 5},
    }
    end, job = await run_job(server, request)
    assert end["type"] == "job_completed", job
    [prediction] = [p for p in fakes.replicate.predictions.values() if p.input.get("prompt") == request["prompt"]]
    assert prediction.model == "wan-video/wan-2.5-i2v"
    assert prediction.input["image"].startswith("data:image/png;base64,")
    assert (prediction.input["duration"], prediction.input["seed"], prediction.input["resolution"]) == (10, 5, "720p")
    assert (job["metadata"]["videoProvider"], job["metadata"]["videoModel"]) == ("replicate", "wan-video/wan-2.5-i2v")
    # the built-in price (no catalog file gives one): $0.10 a second at 720p
    assert job["cost"] == {"imageGeneration": 0.0, "videoGeneration": round(10 * 0.10, 4), "total": 1.0}
    with server.client() as api:
        video = api.get(f"/api/v1/jobs/{job['id']}/download/video")
    assert video.status_code == 200
    path = tmp_path / "replicate.mp4"
    path.write_bytes(video.content)
    width, height, seconds = probe_video(path)  # decodes as a video, of the asked length
    assert (width, height) == (1280, 720) and abs(seconds - 10) < 0.5


async def test_veo_3_1_on_runway_runs_and_costs_its_price_per_second(server: Server, fakes: Fakes):
    request = {
        "prompt": "rain on a tin roof, six seconds of Veo",
        "provider": "local",
        "settings": {"videoProvider": "runway", "videoModel": "veo3.1", "videoDuration": 6},
    }
    end, job = await run_job(server, request)
    assert end["type"] == "job_completed", job
    [task] = [t for t in fakes.runway.tasks.values() if t.body.get("promptText") == request["prompt"]]
    assert (task.body["model"], task.body["duration"]) == ("veo3.1", 6)
    assert job["cost"] == {"imageGeneration": 0.0, "videoGeneration": round(6 * 0.40, 4), "total": 2.4}


async def test_flux_2_pro_runs_on_replicate_priced_per_image(server: Server, fakes: Fakes):
    request = {
        "prompt": "a lighthouse drawn by FLUX.2",
        "provider": "flux1",
        "settings": {"imageModel": "black-forest-labs/flux-2-pro", "imageSize": "1792x1024", "videoProvider": "local", "seed": 8},
    }
    end, job = await run_job(server, request)
    assert end["type"] == "job_completed", job
    [prediction] = [p for p in fakes.replicate.predictions.values() if p.input.get("prompt") == request["prompt"]]
    assert prediction.model == "black-forest-labs/flux-2-pro"
    assert prediction.input == {
        "prompt": request["prompt"],
        "aspect_ratio": "16:9",
        "resolution": "1 MP",
        "seed": 8,
        "output_format": "png",
    }
    assert job["provider"] == "flux1" and job["metadata"]["imageModel"] == "black-forest-labs/flux-2-pro"
    assert job["cost"] == {"imageGeneration": 0.03, "videoGeneration": 0.0, "total": 0.03}

"""Whole jobs on a ComfyUI (tests/fakes/fake_comfyui.py, written from ComfyUI's server.py), through
the real server in a subprocess that reaches it only through COMFYUI_URL: image, video, both, mixed
with the local provider, missing nodes and models reported before a job runs, ComfyUI's errors,
cancels in the queue and while running, a dropped socket, a ComfyUI restart and a promptreel restart."""

from __future__ import annotations

import asyncio
import io
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from PIL import Image

from tests.fakes.fake_comfyui import FakeComfyUI
from tests.support.server import Server
from tests.support.streams import open_stream

TOKEN = "comfy-proxy-token"
TURBO = "sd_xl_turbo_1.0_fp16.safetensors"


def env(fake: FakeComfyUI, **extra: str) -> dict[str, str]:
    return {"COMFYUI_URL": fake.url, "COMFYUI_TOKEN": TOKEN, "PROMPTREEL_POLL_INTERVAL": "0.05", **extra}


def ends(job_id: str):
    def predicate(event: dict[str, Any]) -> bool:
        return event.get("jobId") == job_id and (
            event["type"] in ("job_completed", "job_failed")
            or (event["type"] == "job_update" and event["data"]["status"] == "cancelled")
        )

    return predicate


def request(
    prompt: str, provider: str = "comfyui", video_provider: str = "comfyui", duration: int | None = None
) -> dict[str, Any]:
    duration = duration or (2 if video_provider == "comfyui" else 5)  # the local animator makes 5 or 10 s
    return {
        "prompt": prompt,
        "provider": provider,
        "settings": {"videoProvider": video_provider, "videoDuration": duration, "seed": 7},
    }


async def run_job(server: Server, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(the last event, the job as GET answers it, every event of the job)."""
    stream = await open_stream(server)
    try:
        with server.client() as api:
            response = api.post("/api/v1/generate", json=body)
            assert response.status_code == 201, response.text
            job = response.json()
            end = await stream.until(ends(job["id"]))
            return end, api.get(f"/api/v1/jobs/{job['id']}").json(), stream.of_job(job["id"])
    finally:
        await stream.connection.close()


def download(server: Server, job_id: str, kind: str) -> bytes:
    with server.client() as api:
        response = api.get(f"/api/v1/jobs/{job_id}/download/{kind}")
    assert response.status_code == 200, response.text
    return response.content


def prompts_posted(fake: FakeComfyUI, text: str) -> list[dict[str, Any]]:
    """The POST /prompt bodies whose positive prompt is `text`."""
    return [
        seen.json
        for seen in fake.seen("POST", "/prompt")
        if seen.json["prompt"].get("6", {}).get("inputs", {}).get("text") == text
    ]


async def image_log_says(server: Server, job_id: str, text: str) -> None:
    """Until the server reports `text` in the log of the job's image step."""
    with server.client() as api:
        for _ in range(200):
            if any(text in line for line in api.get(f"/api/v1/jobs/{job_id}").json()["steps"][0]["log"]):
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"the image step's log never said {text!r}")


async def prompt_saved(server: Server, job_id: str) -> None:
    """Until the prompt_id is stored on the job's image step (its log says so)."""
    await image_log_says(server, job_id, "queued ComfyUI prompt")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeComfyUI]:
    server = FakeComfyUI(token=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def studio(fake: FakeComfyUI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("comfyui") / "data", **env(fake)).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh_switches(fake: FakeComfyUI) -> Iterator[None]:
    yield
    fake.fail_node_type = None
    fake.preview_format = "JPEG"
    fake.steps = 4
    fake.step_seconds = 0.0
    fake.release()


def previewed(job_id: str):
    def predicate(event: dict[str, Any]) -> bool:
        return event.get("jobId") == job_id and event["type"] == "step_update" and "previewUrl" in event["data"]

    return predicate


@pytest.mark.parametrize("preview_format", ["JPEG", "PNG"])
async def test_previews_while_sampling_are_served_re_encoded_and_gone_once_the_step_ends(
    studio: Server, fake: FakeComfyUI, preview_format: str
):
    fake.preview_format = preview_format
    fake.pause_at_step = 3  # the previews of steps 1 and 2 sent, then sampling waits
    stream = await open_stream(studio)
    try:
        with studio.client() as api:
            job = api.post("/api/v1/generate", json=request(f"a kite over dunes, {preview_format}", video_provider="local"))
            job_id = job.json()["id"]
            update = await stream.until(previewed(job_id))
            await fake.until(lambda: fake.paused.is_set())
            assert update["data"]["id"] == "image_generation" and update["data"]["status"] == "running"
            url = update["data"]["previewUrl"]  # absolute and signed, as image_url is: an <img> needs no header
            assert url.startswith(f"{studio.url}/api/v1/jobs/{job_id}/preview?") and "signature=" in url and "v=" in url
            answer = httpx.get(url, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == "image/jpeg" and answer.headers["cache-control"] == "no-store"
            with Image.open(io.BytesIO(answer.content)) as preview:  # re-encoded: a JPEG whatever ComfyUI sent
                assert preview.format == "JPEG" and preview.size == (128, 128)
            assert api.get(f"/api/v1/jobs/{job_id}/preview").status_code == 200  # the owner's way in, too
            fake.release()
            end = await stream.until(ends(job_id))
            assert end["type"] == "job_completed"
            gone = api.get(f"/api/v1/jobs/{job_id}/preview")
            assert gone.status_code == 404 and gone.json()["code"] == "PREVIEW_NOT_FOUND"
            assert httpx.get(url, timeout=30).status_code == 404
            stored = api.get(f"/api/v1/jobs/{job_id}/events").json()
    finally:
        await stream.connection.close()
    # The event log holds the preview's URL, never its bytes.
    with_preview = [event for event in stored if "previewUrl" in event["data"]]
    assert with_preview and all(len(json.dumps(event)) < 1000 for event in stored)


async def test_previews_are_throttled_to_two_a_second(studio: Server, fake: FakeComfyUI):
    fake.steps, fake.step_seconds = 40, 0.04  # 40 previews over about 1.6 s
    before = fake.previews_sent
    end, job, events = await run_job(studio, request("a flock of starlings, sampled in 40 steps", video_provider="local"))
    assert end["type"] == "job_completed", job["error"]
    sent = fake.preview_times[before:]
    sampling = sent[-1] - sent[0]
    told = [event for event in events if event["type"] == "step_update" and "previewUrl" in event["data"]]
    assert len(sent) == 40 and 1 <= len(told) <= 2 + sampling / 0.5, (len(told), sampling)
    versions = [int(event["data"]["previewUrl"].rsplit("v=", 1)[1]) for event in told]
    assert versions == list(range(1, len(told) + 1))  # each preview has a URL of its own


async def test_image_and_video_both_on_comfyui(studio: Server, fake: FakeComfyUI):
    prompt = "a lighthouse at dusk, both steps on ComfyUI"
    end, job, events = await run_job(studio, request(prompt, duration=2))
    assert end["type"] == "job_completed", (job["error"], [step["log"] for step in job["steps"]])
    assert job["cost"] == {"imageGeneration": 0.0, "videoGeneration": 0.0, "total": 0.0}

    image_call, video_call = prompts_posted(fake, prompt)
    assert image_call["client_id"] and video_call["client_id"]
    graph = image_call["prompt"]
    assert graph["5"]["inputs"]["width"] == 1024 and graph["13"]["inputs"]["noise_seed"] == 7
    assert graph["4"]["inputs"]["ckpt_name"] == TURBO
    # the image went up through /upload/image and the video workflow's LoadImage names it
    video = video_call["prompt"]
    uploaded = video["78"]["inputs"]["image"]
    assert ("input", "", uploaded) in fake.files
    assert fake.files[("input", "", uploaded)] == download(studio, job["id"], "image")
    assert video["77"]["inputs"]["length"] == 49 and video["69"]["inputs"]["frame_rate"] == 24  # 2 s x 24 fps -> 8n+1
    assert all(seen.headers.get("authorization") == f"Bearer {TOKEN}" for seen in fake.seen("POST", "/prompt"))

    with Image.open(io.BytesIO(download(studio, job["id"], "image"))) as image:
        assert image.format == "PNG" and image.size == (1024, 1024)
    with av.open(io.BytesIO(download(studio, job["id"], "video"))) as container:  # the animated WebP, transcoded
        stream = container.streams.video[0]
        assert container.format.name.startswith("mov") and stream.codec_context.name == "h264"
        frames = sum(1 for _ in container.decode(stream))
        assert frames == 49 and (stream.codec_context.width, stream.codec_context.height) == (640, 640)

    # step progress came from ComfyUI's `progress` value/max; previews were sent and not stored as events
    progress = [e["data"]["progress"] for e in events if e["type"] == "step_update" and e["data"]["id"] == "image_generation"]
    assert any(0 < value < 100 for value in progress), [e for e in events if e["type"] == "step_update"][:6]
    assert fake.previews_sent >= 2 * fake.steps
    with studio.client() as api:
        stored = api.get(f"/api/v1/jobs/{job['id']}/events").json()
    assert all(isinstance(event["data"], dict) for event in stored)


@pytest.mark.parametrize(("provider", "video_provider"), [("local", "comfyui"), ("comfyui", "local")])
async def test_comfyui_mixed_with_the_local_provider(studio: Server, fake: FakeComfyUI, provider: str, video_provider: str):
    prompt = f"a fox in snow, {provider} then {video_provider}"
    end, job, _ = await run_job(studio, request(prompt, provider, video_provider, duration=5))
    assert end["type"] == "job_completed", job
    assert len(prompts_posted(fake, prompt)) == 1
    with av.open(io.BytesIO(download(studio, job["id"], "video"))) as container:
        assert container.streams.video[0].codec_context.name == "h264"


async def test_an_execution_error_names_the_node_type_and_comfyuis_words(studio: Server, fake: FakeComfyUI):
    fake.fail_node_type = "SamplerCustom"
    end, job, _ = await run_job(studio, request("a castle, on a GPU that runs out of memory", video_provider="local"))
    assert end["type"] == "job_failed"
    assert "ComfyUI failed in SamplerCustom" in job["error"] and "ran out of memory on your GPU" in job["error"], job["error"]


async def test_cancel_while_queued_deletes_the_prompt_from_comfyuis_queue(studio: Server, fake: FakeComfyUI):
    fake.hold_queue = True
    with studio.client() as api:
        job = api.post("/api/v1/generate", json=request("a queued harbour", video_provider="local")).json()
        [item] = await fake.until(lambda: fake.pending or None)
        await image_log_says(studio, job["id"], "waiting in ComfyUI's queue: 0 prompts ahead")  # its place, shown
        assert api.delete(f"/api/v1/jobs/{job['id']}").status_code == 200
        [deleted] = await fake.until_request("POST", "/queue")
    assert deleted.json == {"delete": [item[1]]}
    assert not fake.pending and not fake.interrupts


async def test_cancel_while_running_interrupts_our_prompt(studio: Server, fake: FakeComfyUI):
    fake.pause_at_step = 2
    before = len(fake.interrupts)
    with studio.client() as api:
        job = api.post("/api/v1/generate", json=request("a running mill", video_provider="local")).json()
        await fake.until(lambda: fake.paused.is_set())
        running = fake.running[1]
        assert api.delete(f"/api/v1/jobs/{job['id']}").status_code == 200
        await fake.until(lambda: len(fake.interrupts) > before)
        await fake.until(lambda: running in fake.history)
    assert fake.interrupts[-1] == {"prompt_id": running, "running": running}
    assert fake.history[running]["status"]["status_str"] == "error"


async def test_a_cancel_while_sampling_takes_the_preview_away(studio: Server, fake: FakeComfyUI):
    fake.pause_at_step = 2
    stream = await open_stream(studio)
    try:
        with studio.client() as api:
            job_id = api.post("/api/v1/generate", json=request("a windmill, cancelled", video_provider="local")).json()["id"]
            await stream.until(previewed(job_id))  # step 1's preview, stored
            assert api.get(f"/api/v1/jobs/{job_id}/preview").status_code == 200
            assert api.delete(f"/api/v1/jobs/{job_id}").status_code == 200
            await stream.until(ends(job_id))
            gone = api.get(f"/api/v1/jobs/{job_id}/preview")
    finally:
        await stream.connection.close()
    assert gone.status_code == 404 and gone.json()["code"] == "PREVIEW_NOT_FOUND"


async def test_a_dropped_socket_is_recovered_from_the_history_without_queueing_again(studio: Server, fake: FakeComfyUI):
    fake.pause_at_step = 2
    prompt = "a bridge in fog, across a dropped socket"
    with studio.client() as api:
        job = api.post("/api/v1/generate", json=request(prompt, video_provider="local")).json()
    stream = await open_stream(studio)
    try:
        await fake.until(lambda: fake.paused.is_set())
        fake.drop_sockets()
        fake.release()
        with studio.client() as api:
            if api.get(f"/api/v1/jobs/{job['id']}").json()["status"] != "completed":
                await stream.until(ends(job["id"]))
            final = api.get(f"/api/v1/jobs/{job['id']}").json()
    finally:
        await stream.connection.close()
    assert final["status"] == "completed", final
    assert len(prompts_posted(fake, prompt)) == 1


async def test_a_comfyui_restart_that_lost_the_prompt_fails_the_step_without_queueing_again(studio: Server, fake: FakeComfyUI):
    fake.pause_at_step = 2
    prompt = "a tower, on a ComfyUI that restarts"
    with studio.client() as api:
        job = api.post("/api/v1/generate", json=request(prompt, video_provider="local")).json()
    stream = await open_stream(studio)
    try:
        await fake.until(lambda: fake.paused.is_set())
        fake.restart()
        with studio.client() as api:
            if api.get(f"/api/v1/jobs/{job['id']}").json()["status"] != "failed":
                await stream.until(ends(job["id"]))
            final = api.get(f"/api/v1/jobs/{job['id']}").json()
    finally:
        await stream.connection.close()
    assert final["status"] == "failed" and "ComfyUI no longer knows prompt" in final["error"], final
    assert len(prompts_posted(fake, prompt)) == 1


async def test_a_promptreel_restart_follows_the_same_prompt(fake: FakeComfyUI, tmp_path: Path):
    fake.pause_at_step = 2
    prompt = "a train through snow, across a promptreel restart"
    data_dir = tmp_path / "data"
    first = Server(data_dir, **env(fake)).start()
    try:
        with first.client() as api:
            job = api.post("/api/v1/generate", json=request(prompt, video_provider="local")).json()
        await fake.until(lambda: fake.paused.is_set())
        await prompt_saved(first, job["id"])
    finally:
        first.stop(signal.SIGKILL)
    second = Server(data_dir, port=first.port, **env(fake)).start()
    try:
        stream = await open_stream(second)
        fake.release()
        with second.client() as api:
            if api.get(f"/api/v1/jobs/{job['id']}").json()["status"] != "completed":
                await stream.until(ends(job["id"]))
            final = api.get(f"/api/v1/jobs/{job['id']}").json()
        await stream.connection.close()
    finally:
        second.stop()
    assert final["status"] == "completed", (final["error"], final["steps"][0]["log"])
    assert len(prompts_posted(fake, prompt)) == 1, "the restarted job queued the prompt again"
    assert any("following ComfyUI prompt" in line for line in final["steps"][0]["log"])


@pytest.mark.parametrize(
    ("remove", "model", "reason"),
    [
        (("model", "checkpoints", TURBO), "comfyui-image", f"ComfyUI has no checkpoint `{TURBO}` in `checkpoints`"),
        (("node", "LTXVImgToVideo"), "comfyui-video", "ComfyUI has no node `LTXVImgToVideo`"),
    ],
    ids=["missing checkpoint", "missing node"],
)
async def test_what_comfyui_misses_is_reported_before_any_job_runs(
    tmp_path: Path, remove: tuple[str, ...], model: str, reason: str
):
    fake = FakeComfyUI(token=TOKEN).start()
    if remove[0] == "model":
        fake.remove_model(remove[1], remove[2])
    else:
        fake.remove_node(remove[1])
    server = Server(tmp_path / "data", **env(fake)).start()
    try:
        with server.client() as api:
            for _ in range(100):  # the check started with the server; its answer is cached once in
                entry = next(m for m in api.get("/api/v1/models", params={"provider": "comfyui"}).json() if m["id"] == model)
                if entry["available"] is False:
                    break
                await asyncio.sleep(0.05)
            assert entry["available"] is False and reason in entry["reason"], entry
            status = api.get("/api/v1/status").json()
            assert status["comfyui_available"] is True and reason in status["comfyui_missing"], status  # it answers, but lacks
            response = api.post("/api/v1/generate", json=request("a garden", "comfyui", "comfyui"))
            assert response.status_code != 201 and reason in response.json()["error"], response.text
    finally:
        server.stop()
        fake.stop()
    assert not fake.seen("POST", "/prompt")


async def test_one_prompt_at_a_time_per_comfyui_by_default(studio: Server, fake: FakeComfyUI):
    """COMFYUI_CONCURRENCY=1: a second job's step waits in promptreel, not in ComfyUI's queue."""
    fake.pause_at_step = 2
    first_prompt, second_prompt = "one GPU: the first", "one GPU: the second"
    stream = await open_stream(studio)
    try:
        with studio.client() as api:
            first = api.post("/api/v1/generate", json=request(first_prompt, video_provider="local")).json()
            await fake.until(lambda: fake.paused.is_set())
            second = api.post("/api/v1/generate", json=request(second_prompt, video_provider="local")).json()
            for _ in range(200):  # until the server reports the second job's image step running
                if api.get(f"/api/v1/jobs/{second['id']}").json()["status"] == "generating_image":
                    break
                await asyncio.sleep(0.05)
            assert api.get(f"/api/v1/jobs/{second['id']}").json()["status"] == "generating_image"
            assert len(prompts_posted(fake, first_prompt)) == 1 and not prompts_posted(fake, second_prompt)
            fake.release()
            for job in (first, second):
                if api.get(f"/api/v1/jobs/{job['id']}").json()["status"] != "completed":
                    await stream.until(ends(job["id"]))
                assert api.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "completed"
    finally:
        await stream.connection.close()
    first_id = next(pid for pid, entry in fake.history.items() if entry["prompt"][2]["6"]["inputs"]["text"] == first_prompt)
    [second_post] = [seen for seen in fake.seen("POST", "/prompt") if seen.json["prompt"]["6"]["inputs"]["text"] == second_prompt]
    [first_done] = [seen for seen in fake.seen("GET", f"/history/{first_id}")][-1:]
    assert second_post.at > first_done.at  # queued only once the first had ended

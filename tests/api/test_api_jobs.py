"""A local job through the real server: REST answers, /ws events, downloads decoded."""

from __future__ import annotations

import io
import re

import av
import httpx
from PIL import Image

from tests.support.jobs import local_job, unsigned
from tests.support.server import Server
from tests.support.streams import EventStream, ends_job, open_stream

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
JOB_KEYS = {
    "id",
    "prompt",
    "provider",
    "status",
    "progress",
    "created_at",
    "updated_at",
    "metadata",
    "image_url",
    "video_url",
    "cost",
    "error",
    "steps",
}


def check_event_order(events: list[dict], job_id: str, last_type: str) -> None:
    """Per job: progress never goes down, step progress never goes down, the end event is last."""
    mine = [event for event in events if event.get("jobId") == job_id]
    assert mine, "no events for the job"
    assert mine[-1]["type"] == last_type, [e["type"] for e in mine[-3:]]
    job_progress = [e["data"]["progress"] for e in mine if e["type"] == "job_update"]
    assert job_progress == sorted(job_progress), job_progress
    for step_id in ("image_generation", "video_generation"):
        steps = [e["data"] for e in mine if e["type"] == "step_update" and e["data"]["id"] == step_id]
        progress = [s["progress"] for s in steps]
        assert progress == sorted(progress), (step_id, progress)
    # The guide's three keys, plus the event's number within its job (for catch-up after a reconnect).
    assert [event["seq"] for event in mine] == list(range(mine[0]["seq"], mine[0]["seq"] + len(mine)))
    for event in mine:
        assert set(event) == {"type", "jobId", "data", "seq"}
        assert event["type"] in ("job_update", "step_update", "job_completed", "job_failed")


async def test_local_job_end_to_end(server: Server, api: httpx.Client, events: EventStream):
    response = api.post("/api/v1/generate", json=local_job(seed=12345))
    assert response.status_code == 201, response.text
    job = response.json()
    assert JOB_KEYS <= set(job)
    assert job["id"].startswith("job_") and job["status"] == "pending" and job["progress"] == 0
    assert job["provider"] == "local" and job["prompt"] == "A majestic mountain landscape at golden hour"
    assert ISO_Z.match(job["created_at"]) and ISO_Z.match(job["updated_at"])
    assert job["metadata"]["imageSize"] == "1024x1024" and job["metadata"]["videoDuration"] == 5
    assert job["metadata"]["quality"] == "standard" and job["metadata"]["seed"] == 12345
    assert job["image_url"] is None and job["video_url"] is None
    assert [step["id"] for step in job["steps"]] == ["image_generation", "video_generation"]

    done = await events.until(ends_job(job["id"]))
    assert done["type"] == "job_completed", done
    check_event_order(events.events, job["id"], "job_completed")
    statuses = [e["data"]["status"] for e in events.of_job(job["id"]) if e["type"] == "job_update"]
    assert statuses.index("generating_image") < statuses.index("generating_video") < statuses.index("completed")
    step_statuses = {e["data"]["id"]: e["data"]["status"] for e in events.of_job(job["id"]) if e["type"] == "step_update"}
    assert step_statuses == {"image_generation": "completed", "video_generation": "completed"}
    assert any(0 < e["data"]["progress"] < 100 for e in events.of_job(job["id"]) if e["type"] == "step_update"), (
        "no intermediate progress"
    )
    image_url = f"{server.url}/api/v1/jobs/{job['id']}/download/image"
    assert unsigned(done["data"]) == {
        "id": job["id"],
        "status": "completed",
        "progress": 100,
        "image_url": image_url,
        "video_url": f"{server.url}/api/v1/jobs/{job['id']}/download/video",
        "cost": {"imageGeneration": 0.0, "videoGeneration": 0.0, "total": 0.0},
    }

    stored = api.get(f"/api/v1/jobs/{job['id']}").json()
    assert stored["status"] == "completed" and stored["progress"] == 100 and stored["error"] is None
    assert stored["image_url"].startswith(image_url + "?expires=")  # signed: works without a header
    assert all(step["status"] == "completed" and step["progress"] == 100 for step in stored["steps"])
    assert all(ISO_Z.match(step["startTime"]) and ISO_Z.match(step["endTime"]) for step in stored["steps"])

    image = api.get(stored["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.headers["content-disposition"].startswith("attachment;")
    decoded = Image.open(io.BytesIO(image.content))
    decoded.load()
    assert decoded.format == "PNG" and decoded.size == (1024, 1024)

    video = api.get(stored["video_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert video.headers["accept-ranges"] == "bytes"
    with av.open(io.BytesIO(video.content)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (960, 960)
        frames = sum(1 for _ in container.decode(stream))
    assert frames == 5 * 24

    # HTTP Range: a player seeks by asking for a slice.
    size = len(video.content)
    part = api.get(stored["video_url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == video.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{size}"
    assert api.get(stored["video_url"], headers={"Range": f"bytes={size + 10}-"}).status_code == 416

    cancel = api.delete(f"/api/v1/jobs/{job['id']}")
    assert cancel.status_code == 409 and cancel.json()["code"] == "JOB_NOT_CANCELLABLE"


async def test_cancel_during_the_video_step(server: Server, api: httpx.Client, events: EventStream):
    job = api.post("/api/v1/generate", json=local_job("a neon city at night", videoDuration=10)).json()
    await events.until(
        lambda e: (
            e.get("jobId") == job["id"]
            and e["type"] == "step_update"
            and e["data"]["id"] == "video_generation"
            and e["data"]["progress"] >= 5
        )
    )
    response = api.delete(f"/api/v1/jobs/{job['id']}")
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled" and cancelled["video_url"] is None
    steps = {step["id"]: step for step in cancelled["steps"]}
    assert steps["image_generation"]["status"] == "completed"
    assert steps["video_generation"]["status"] == "cancelled" and steps["video_generation"]["endTime"]
    end = await events.until(ends_job(job["id"]))
    assert end["type"] == "job_update" and end["data"]["status"] == "cancelled"
    check_event_order(events.events, job["id"], "job_update")
    # Nothing of the video is left behind, and the step stays stopped.
    assert api.get(f"/api/v1/jobs/{job['id']}/download/video").json()["code"] == "MEDIA_NOT_READY"
    assert api.get(f"/api/v1/jobs/{job['id']}/download/image").status_code == 200
    await events.send({"type": "ping"})
    assert (await events.until(lambda e: e.get("type") == "pong"))["type"] == "pong"
    assert events.events[-1] == {"type": "pong"}  # no event of the job came after its cancel
    assert not list((server.data_dir / "media" / job["id"]).glob("*.mp4*"))
    assert api.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "cancelled"


async def test_jobs_list_filters_and_websocket_subscribe(server: Server, api: httpx.Client):
    everything = await open_stream(server)
    narrowed = await open_stream(server)
    first = api.post("/api/v1/generate", json=local_job("a quiet forest in fog")).json()
    await narrowed.send({"type": "subscribe", "jobId": first["id"]})
    await narrowed.send({"type": "ping"})
    await narrowed.until(lambda e: e.get("type") == "pong")  # the subscription is in place
    second = api.post("/api/v1/generate", json=local_job("ocean sunset over the sea")).json()
    await api_cancel(api, second["id"])
    await everything.until(ends_job(second["id"]))
    await everything.until(ends_job(first["id"]))
    await narrowed.until(ends_job(first["id"]))
    assert {e.get("jobId") for e in narrowed.events if "jobId" in e} == {first["id"]}
    assert second["id"] in {e.get("jobId") for e in everything.events}

    listed = api.get("/api/v1/jobs")
    assert listed.headers["X-Total-Count"] == "2"
    assert [job["id"] for job in listed.json()] == [second["id"], first["id"]]  # newest first
    assert [j["id"] for j in api.get("/api/v1/jobs", params={"status": "cancelled"}).json()] == [second["id"]]
    assert [j["id"] for j in api.get("/api/v1/jobs", params={"q": "FOREST"}).json()] == [first["id"]]
    assert api.get("/api/v1/jobs", params={"q": "%"}).json() == []  # LIKE wildcards are text
    page = api.get("/api/v1/jobs", params={"limit": 1, "offset": 1})
    assert [j["id"] for j in page.json()] == [first["id"]] and page.headers["X-Total-Count"] == "2"

    # Dropping the last subscription leaves the client with none, not with every job.
    await narrowed.send({"type": "unsubscribe", "jobId": first["id"]})
    third = api.post("/api/v1/generate", json=local_job("a quiet harbour")).json()
    await api_cancel(api, third["id"])
    await everything.until(ends_job(third["id"]))
    await narrowed.send({"type": "ping"})
    await narrowed.until(lambda e: e.get("type") == "pong")
    assert third["id"] not in {e.get("jobId") for e in narrowed.events}

    await narrowed.send({"type": "dance"})
    error = await narrowed.until(lambda e: e.get("type") == "error")
    assert error["code"] == "VALIDATION_ERROR" and error["details"]["field"] == "type"
    await narrowed.send("not json at all")  # type: ignore[arg-type]
    assert (await narrowed.until(lambda e: e.get("type") == "error"))["code"] == "VALIDATION_ERROR"
    for stream in (everything, narrowed):
        await stream.connection.close()


async def api_cancel(api: httpx.Client, job_id: str) -> None:
    response = api.delete(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"


def test_status_health_docs_and_cors(shared_server: Server):
    with shared_server.client() as api:
        assert api.get("/health").status_code == 200
        status = api.get("/api/v1/status").json()
        assert status == {
            "dalle3_available": False,
            "flux1_available": False,
            "runway_available": False,
            "comfyui_available": False,  # COMFYUI_URL is not set
            "comfyui_missing": None,
            "active_jobs": 0,
            "queue_length": 0,
            "system_load": status["system_load"],
            "workers_alive": 1,  # this instance runs its jobs itself
        }
        assert isinstance(status["system_load"], float) and status["system_load"] >= 0
        assert api.get("/docs").status_code == 200
        paths = api.get("/openapi.json").json()["paths"]
        for path in (
            "/api/v1/generate",
            "/api/v1/jobs",
            "/api/v1/jobs/{job_id}",
            "/api/v1/status",
            "/api/v1/jobs/{job_id}/download/{type}",
            "/health",
        ):
            assert path in paths
        preflight = api.options(
            "/api/v1/generate",
            headers={
                "Origin": "http://localhost:3000",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
        listed = api.get("/api/v1/jobs", headers={"Origin": "http://localhost:3000"})
        assert "X-Total-Count".lower() in listed.headers["access-control-expose-headers"].lower()
        assert "access-control-allow-origin" not in api.get("/api/v1/jobs", headers={"Origin": "http://evil.example"}).headers


async def test_jobs_queue_behind_the_provider_limit(server: Server, api: httpx.Client, events: EventStream):
    """PROMPTREEL_LOCAL_CONCURRENCY is 1: a second job's video waits while the first one renders."""
    first = api.post("/api/v1/generate", json=local_job("a city skyline at dusk", videoDuration=10)).json()
    await events.until(
        lambda e: e.get("jobId") == first["id"] and e["type"] == "step_update" and e["data"]["id"] == "video_generation"
    )
    second = api.post("/api/v1/generate", json=local_job("a lake at dawn")).json()
    await events.until(
        lambda e: (
            e.get("jobId") == second["id"]
            and e["type"] == "step_update"
            and e["data"]["id"] == "image_generation"
            and e["data"]["status"] == "completed"
        )
    )
    status = api.get("/api/v1/status").json()
    assert (status["active_jobs"], status["queue_length"]) == (1, 1), status
    assert api.get(f"/api/v1/jobs/{second['id']}").json()["steps"][1]["status"] == "pending"
    third = api.post("/api/v1/generate", json=local_job("a field of flowers")).json()
    await events.until(
        lambda e: (
            e.get("jobId") == third["id"]
            and e["type"] == "step_update"
            and e["data"]["id"] == "image_generation"
            and e["data"]["status"] == "completed"
        )
    )
    assert api.get("/api/v1/status").json()["queue_length"] == 2

    # Cancelled while it waits for the video slot: its finished image stays finished.
    await api_cancel(api, second["id"])
    steps = {step["id"]: step for step in api.get(f"/api/v1/jobs/{second['id']}").json()["steps"]}
    assert steps["image_generation"]["status"] == "completed" and steps["video_generation"]["status"] == "cancelled"
    assert api.get(f"/api/v1/jobs/{second['id']}/download/image").status_code == 200

    await api_cancel(api, first["id"])
    await events.until(
        lambda e: (
            e.get("jobId") == third["id"]
            and e["type"] == "step_update"
            and e["data"]["id"] == "video_generation"
            and e["data"]["status"] == "running"
        )
    )
    await api_cancel(api, third["id"])
    status = api.get("/api/v1/status").json()
    assert (status["active_jobs"], status["queue_length"]) == (0, 0), status

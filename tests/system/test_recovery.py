"""A job interrupted by a stop (clean or a crash) finishes after the next start."""

from __future__ import annotations

import io
import signal

import av
import pytest

from tests.support.jobs import local_job
from tests.support.server import Server
from tests.support.streams import ends_job, open_stream


async def start_until_mid_video(server: Server, prompt: str) -> dict:
    """Start a 10 s local job and return it once its video step is under way (the moment to stop)."""
    stream = await open_stream(server)
    try:
        with server.client() as api:
            job = api.post("/api/v1/generate", json=local_job(prompt, videoDuration=10)).json()
        await stream.until(
            lambda e: (
                e.get("jobId") == job["id"]
                and e["type"] == "step_update"
                and e["data"]["id"] == "video_generation"
                and e["data"]["progress"] >= 3
            )
        )
    finally:
        await stream.connection.close()
    return job


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["clean-stop", "crash"])
async def test_job_interrupted_mid_video_finishes_after_restart(tmp_path, stop_signal):
    data_dir = tmp_path / "data"
    # Quick heartbeats: after a crash the job is free once its dead owner has been silent 1.5 s.
    first = Server(data_dir, PROMPTREEL_HEARTBEAT_SECONDS="0.5", PROMPTREEL_STALLED_AFTER_SECONDS="1.5").start()
    try:
        job = await start_until_mid_video(first, "snowy mountains under the stars")
    finally:
        first.stop(stop_signal)

    second = Server(data_dir, port=first.port, PROMPTREEL_HEARTBEAT_SECONDS="0.5", PROMPTREEL_STALLED_AFTER_SECONDS="1.5").start()
    try:
        stream = await open_stream(second)
        with second.client() as api:
            state = api.get(f"/api/v1/jobs/{job['id']}").json()
            assert state["status"] in ("generating_video", "completed"), state
            assert state["steps"][0]["status"] == "completed"  # the image is not made again
            if state["status"] != "completed":
                end = await stream.until(ends_job(job["id"]))
                assert end["type"] == "job_completed", end
            final = api.get(f"/api/v1/jobs/{job['id']}").json()
        assert final["status"] == "completed" and final["progress"] == 100
        assert final["created_at"] == job["created_at"]
        video_log = final["steps"][1]["log"]
        assert any("resumed after a restart" in line for line in video_log), video_log
        assert api_video_frames(second, job["id"]) == 10 * 24
        await stream.connection.close()
    finally:
        second.stop()


def api_video_frames(server: Server, job_id: str) -> int:
    with server.client() as api:
        content = api.get(f"/api/v1/jobs/{job_id}/download/video").content
    with av.open(io.BytesIO(content)) as container:
        return sum(1 for _ in container.decode(video=0))


async def test_the_server_on_postgresql_runs_and_resumes_jobs(tmp_path, postgres_url):
    """DATABASE_URL on PostgreSQL: the same service, its own database, a crash and a resume."""
    env = {"DATABASE_URL": postgres_url, "PROMPTREEL_HEARTBEAT_SECONDS": "0.5", "PROMPTREEL_STALLED_AFTER_SECONDS": "1.5"}
    first = Server(tmp_path / "data", **env).start()
    try:
        job = await start_until_mid_video(first, "a harbour at night")
    finally:
        first.stop(signal.SIGKILL)
    assert not (tmp_path / "data" / "promptreel.db").exists()  # nothing went to SQLite

    second = Server(tmp_path / "data", port=first.port, **env).start()
    try:
        stream = await open_stream(second)
        with second.client() as api:
            if api.get(f"/api/v1/jobs/{job['id']}").json()["status"] != "completed":
                assert (await stream.until(ends_job(job["id"])))["type"] == "job_completed"
            final = api.get(f"/api/v1/jobs/{job['id']}").json()
            assert api.get("/api/v1/jobs").headers["X-Total-Count"] == "1"
        assert final["status"] == "completed"
        assert api_video_frames(second, job["id"]) == 10 * 24
        await stream.connection.close()
    finally:
        second.stop()

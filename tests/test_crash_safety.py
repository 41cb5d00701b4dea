"""Crash safety: a SIGKILL mid-work loses no job and leaves the database intact and no
half-written file served; a full disk or an unwritable media folder fails the job with a clear
error while the service keeps answering."""

from __future__ import annotations

import io
import resource
import shutil
import signal
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import av
import httpx
from PIL import Image

from .conftest import EventStream, Server, ends_job, local_job, open_stream

#: Quick heartbeats: after a crash the jobs are free once their dead owner has been silent 1.5 s.
QUICK_TAKEOVER = {"PROMPTREEL_HEARTBEAT_SECONDS": "0.5", "PROMPTREEL_STALLED_AFTER_SECONDS": "1.5"}
#: The "full disk": the largest file the server may write (a PNG here is ~1.5 MB, a 5 s video ~0.7 MB).
FILE_SIZE_LIMIT = 128 * 1024


async def seen(stream: EventStream, predicate, timeout: float = 120) -> dict[str, Any]:
    """The first event, already read or still to come, that matches."""
    for event in stream.events:
        if predicate(event):
            return event
    return await stream.until(predicate, timeout)


def step_reached(events: list[dict[str, Any]], job_id: str, step: str, progress: int) -> bool:
    return any(
        e.get("jobId") == job_id and e["type"] == "step_update" and e["data"]["id"] == step and e["data"]["progress"] >= progress
        for e in events
    )


def integrity(db: Path) -> list[tuple[str, ...]]:
    with closing(sqlite3.connect(db)) as connection:
        return connection.execute("PRAGMA integrity_check").fetchall()


def stored_phases(db: Path) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    with closing(sqlite3.connect(db)) as connection:
        jobs = dict(connection.execute("SELECT id, status FROM jobs").fetchall())
        steps = {
            (job_id, kind): status for job_id, kind, status in connection.execute("SELECT job_id, kind, status FROM job_steps")
        }
    return jobs, steps


def decoded_image(content: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(content)) as image:
        image.load()  # every byte decoded: a truncated PNG raises
        return image.size


def decoded_frames(content: bytes) -> int:
    with av.open(io.BytesIO(content)) as container:
        return sum(1 for _ in container.decode(video=0))


async def test_a_crash_with_jobs_in_every_phase_loses_nothing(tmp_path: Path):
    data_dir = tmp_path / "data"
    db = data_dir / "promptreel.db"
    first = Server(data_dir, **QUICK_TAKEOVER).start()
    try:
        stream = await open_stream(first)
        with first.client() as api:
            # Local jobs make one image and one video at a time: A animates, B renders its image, C waits.
            # B's image is the large size: it renders for longer than A's video takes to get its file written.
            a, b, c = (
                api.post("/api/v1/generate", json=local_job(prompt, videoDuration=duration, imageSize=size)).json()
                for prompt, duration, size in (
                    ("a harbour at night", 10, "1024x1024"),
                    ("a forest in autumn", 5, "1792x1024"),
                    ("a desert at noon", 5, "1024x1024"),
                )
            )
        await stream.until(
            lambda _: (
                step_reached(stream.events, a["id"], "video_generation", 10)
                and step_reached(stream.events, b["id"], "image_generation", 5)
            )
        )
        first.stop(signal.SIGKILL)
        await stream.connection.close()
    finally:
        first.stop(signal.SIGKILL)

    assert integrity(db) == [("ok",)]
    jobs, steps = stored_phases(db)
    assert jobs == {a["id"]: "generating_video", b["id"]: "generating_image", c["id"]: "pending"}
    assert (steps[a["id"], "video_generation"], steps[b["id"], "image_generation"], steps[c["id"], "image_generation"]) == (
        "running",
        "running",
        "pending",
    )
    a_folder = data_dir / "media" / a["id"]
    # The kill cut the video's write short: the half-file lies under a temporary name only.
    assert list(a_folder.glob("*.part")) and not (a_folder / "video.mp4").exists()

    second = Server(data_dir, **QUICK_TAKEOVER).start()
    try:
        stream = await open_stream(second)
        with second.client() as api:
            # Before A's video is remade, its download is "not ready", never the half-file.
            early = api.get(f"/api/v1/jobs/{a['id']}/download/video")
            assert (early.status_code == 200 and decoded_frames(early.content) == 10 * 24) or (
                early.status_code == 404 and early.json()["code"] == "MEDIA_NOT_READY"
            ), early.status_code
            for job in (a, b, c):
                if api.get(f"/api/v1/jobs/{job['id']}").json()["status"] != "completed":
                    end = await seen(stream, ends_job(job["id"]))
                    assert end["type"] == "job_completed", end
            listed = api.get("/api/v1/jobs")
            assert listed.headers["X-Total-Count"] == "3"
            for job, duration, size in ((a, 10, (1024, 1024)), (b, 5, (1792, 1024)), (c, 5, (1024, 1024))):
                final = api.get(f"/api/v1/jobs/{job['id']}").json()
                assert (final["status"], final["progress"], final["created_at"]) == ("completed", 100, job["created_at"])
                assert decoded_image(api.get(f"/api/v1/jobs/{job['id']}/download/image").content) == size
                assert decoded_frames(api.get(f"/api/v1/jobs/{job['id']}/download/video").content) == duration * 24
            a_log = api.get(f"/api/v1/jobs/{a['id']}").json()["steps"][1]["log"]
            b_log = api.get(f"/api/v1/jobs/{b['id']}").json()["steps"][0]["log"]
            assert any("resumed after a restart" in line for line in a_log), a_log
            assert any("resumed after a restart" in line for line in b_log), b_log
        await stream.connection.close()
    finally:
        second.stop()

    # Each job folder holds its two finished files, and the crash's half-file is gone.
    for job in (a, b, c):
        assert sorted(path.name for path in (data_dir / "media" / job["id"]).iterdir()) == ["image.png", "video.mp4"]
    assert integrity(db) == [("ok",)]


def limit_file_size(server: Server, limit: int | None) -> None:
    """Lower (or lift, None) the server's RLIMIT_FSIZE: a write past `limit` bytes fails with
    EFBIG, as on a full disk (Python ignores SIGXFSZ). Works unprivileged, unlike a tiny mount."""
    assert server.process is not None
    _, hard = resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, (hard if limit is None else limit, hard))


def assert_still_serving(api: httpx.Client, job_id: str) -> None:
    assert api.get("/api/v1/status").status_code == 200
    listed = api.get("/api/v1/jobs")
    assert listed.status_code == 200 and job_id in {item["id"] for item in listed.json()}


async def test_a_full_disk_fails_the_job_clearly_and_the_service_stays_up(tmp_path: Path, postgres_url: str):
    # On PostgreSQL: the file size limit would hit SQLite's own files too, and the point is the media.
    server = Server(tmp_path / "data", DATABASE_URL=postgres_url).start()
    media_root = (tmp_path / "data" / "media").resolve()
    stream = await open_stream(server)
    try:
        with server.client() as api:
            # The image does not fit.
            limit_file_size(server, FILE_SIZE_LIMIT)
            job = api.post("/api/v1/generate", json=local_job("a glacier under a grey sky")).json()
            end = await stream.until(ends_job(job["id"]))
            assert end["type"] == "job_failed", end
            assert end["data"]["error"] == f"Image generation failed: could not store the image in {media_root}: File too large"
            assert api.get("/health").status_code == 200  # an empty probe file still fits
            assert_still_serving(api, job["id"])
            missing = api.get(f"/api/v1/jobs/{job['id']}/download/image")
            assert missing.status_code == 404 and missing.json()["code"] == "MEDIA_NOT_READY"
            assert not list(media_root.rglob("*.part"))  # the half-file that filled the disk is gone

            # The image fits; the disk fills while the video is written.
            limit_file_size(server, None)
            job = api.post("/api/v1/generate", json=local_job("a lighthouse in a storm")).json()
            await stream.until(
                lambda e: (
                    e.get("jobId") == job["id"]
                    and e["type"] == "step_update"
                    and e["data"]["id"] == "image_generation"
                    and e["data"]["status"] == "completed"
                )
            )
            limit_file_size(server, FILE_SIZE_LIMIT)
            end = await stream.until(ends_job(job["id"]))
            assert end["type"] == "job_failed", end
            assert end["data"]["error"] == f"Video generation failed: could not write the video in {media_root}: File too large"
            assert_still_serving(api, job["id"])
            assert decoded_image(api.get(f"/api/v1/jobs/{job['id']}/download/image").content) == (1024, 1024)
            assert api.get(f"/api/v1/jobs/{job['id']}/download/video").json()["code"] == "MEDIA_NOT_READY"
            assert not list(media_root.rglob("*.part"))

            # Room again: the next job goes through.
            limit_file_size(server, None)
            job = api.post("/api/v1/generate", json=local_job("a meadow in spring")).json()
            assert (await stream.until(ends_job(job["id"])))["type"] == "job_completed"
    finally:
        await stream.connection.close()
        server.stop()


async def test_an_unwritable_media_folder_fails_the_job_clearly_and_the_service_stays_up(tmp_path: Path):
    server = Server(tmp_path / "data").start()
    media_root = tmp_path / "data" / "media"
    stream = await open_stream(server)
    try:
        # A file where the folder was: root ignores chmod, not this.
        shutil.rmtree(media_root)
        media_root.write_text("not a folder")
        with server.client() as api:
            job = api.post("/api/v1/generate", json=local_job("a city in the rain")).json()
            end = await stream.until(ends_job(job["id"]))
            assert end["type"] == "job_failed", end
            assert (
                end["data"]["error"]
                == f"Image generation failed: could not store the image in {media_root.resolve()}: Not a directory"
            )
            health = api.get("/health")  # answers, and names the problem
            assert health.status_code == 503 and health.json()["code"] == "MEDIA_UNAVAILABLE", health.text
            assert_still_serving(api, job["id"])

            media_root.unlink()
            media_root.mkdir()
            assert api.get("/health").status_code == 200
            job = api.post("/api/v1/generate", json=local_job("a city in the sun")).json()
            assert (await stream.until(ends_job(job["id"])))["type"] == "job_completed"
    finally:
        await stream.connection.close()
        server.stop()

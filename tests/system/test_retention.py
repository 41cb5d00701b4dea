"""Media retention: old finished jobs lose their files, keep their place in the history, and
their downloads answer 410 MEDIA_EXPIRED."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col

from backend.jobs.public import iso, job_data
from backend.media.retention import MIN_ROUND_INTERVAL, expire_media, round_interval
from backend.settings import Settings
from backend.store.models import Job, JobStatus, utcnow
from backend.system import HOUSEKEEPING_INTERVAL, System
from tests.support.jobs import local_job
from tests.support.server import Server
from tests.support.streams import open_stream

PNG = b"\x89PNG\r\n\x1a\n-not-really-an-image"
MP4 = b"\x00\x00\x00\x18ftypmp42-not-really-a-video"
RETENTION = timedelta(days=2)


@pytest.fixture(params=["sqlite", "postgres"])
def system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[System]:
    database = {"DATABASE_URL": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    built = System(Settings(_env_file=None, PROMPTREEL_DATA_DIR=tmp_path, **database))
    built.migrate()
    yield built
    built.engine.dispose()


def add_job(system: System, job_id: str, status: JobStatus, age: timedelta, *, image: bool = True, video: bool = True) -> None:
    """A job last changed `age` ago, with the media its phase would have."""
    system.store.create(
        Job(
            id=job_id,
            prompt="a lighthouse at dawn",
            provider="local",
            video_provider="local",
            image_size="1024x1024",
            video_duration=5,
            quality="standard",
            seed=7,
        )
    )
    paths: dict[str, Any] = {}
    if image:
        paths["image_path"] = system.media.write_image(job_id, PNG)
    if video:
        with system.media.staging(job_id) as staging:
            output = system.media.video_output(job_id, staging)
            output.write_bytes(MP4)
            paths["video_path"] = system.media.commit_video(job_id, output)
    system.store.update_job(job_id, status=status.value, **paths)
    then = utcnow() - age
    # Straight SQL: update_job would stamp updated_at with now.
    with system.engine.begin() as connection:
        connection.execute(
            update(Job).where(col(Job.id) == job_id).values(created_at=then - timedelta(minutes=5), updated_at=then)
        )


def folder(system: System, job_id: str) -> Path:
    return system.media.root / job_id  # type: ignore[attr-defined]


def test_old_finished_jobs_lose_their_media_and_stay_in_the_history(system: System):
    old = RETENTION + timedelta(hours=1)
    add_job(system, "job_oldcompleted", JobStatus.COMPLETED, old + timedelta(hours=2))
    add_job(system, "job_oldfailed000", JobStatus.FAILED, old + timedelta(hours=1), video=False)
    add_job(system, "job_oldcancelled", JobStatus.CANCELLED, old, video=False)
    (folder(system, "job_oldfailed000") / ".video.part.1.2.part").write_bytes(b"half a video")  # left by a crash
    # Not to be touched: unfinished however old, finished but recent.
    add_job(system, "job_oldpending00", JobStatus.PENDING, old, image=False, video=False)
    add_job(system, "job_oldrunning00", JobStatus.GENERATING_VIDEO, old, video=False)
    add_job(system, "job_newcompleted", JobStatus.COMPLETED, RETENTION - timedelta(hours=1))
    untouched = {job_id: system.store.get(job_id).job for job_id in ("job_oldpending00", "job_oldrunning00", "job_newcompleted")}

    before = utcnow()
    # A batch of 2: the three expirable jobs take two queries, none is skipped.
    expired = expire_media(system.store, system.media, utcnow() - RETENTION, batch_size=2)

    assert expired == ["job_oldcompleted", "job_oldfailed000", "job_oldcancelled"]  # oldest first
    for job_id in expired:
        assert not folder(system, job_id).exists(), job_id
        job = system.store.get(job_id).job
        assert job.media_expired_at is not None and before <= job.media_expired_at <= utcnow()
        assert job.updated_at == job.media_expired_at  # clients see the job changed
        data = job_data(system.store.get(job_id))
        assert data["image_url"] is None and data["video_url"] is None
        assert data["metadata"]["mediaExpiredAt"] == iso(job.media_expired_at)
    completed = system.store.get("job_oldcompleted").job
    # The paths stay: the job shows it had media, and its download answers 410, not 404.
    assert (completed.status, completed.image_path, completed.video_path) == (
        "completed",
        "job_oldcompleted/image.png",
        "job_oldcompleted/video.mp4",
    )

    for job_id, job in untouched.items():
        now = system.store.get(job_id).job
        assert now.media_expired_at is None and now.updated_at == job.updated_at, job_id
        for relative in (now.image_path, now.video_path):
            assert relative is None or system.media.read_bytes(relative) in (PNG, MP4), (job_id, relative)
        assert "mediaExpiredAt" not in job_data(system.store.get(job_id))["metadata"]
    assert job_data(system.store.get("job_newcompleted"))["video_url"] == "/api/v1/jobs/job_newcompleted/download/video"

    records, total = system.store.list()
    assert total == 6 and len(records) == 6  # nothing left the history
    assert expire_media(system.store, system.media, utcnow() - RETENTION) == []  # a second round finds nothing new


@pytest.mark.parametrize(
    "cutoff", [lambda: datetime.now() - RETENTION, lambda: utcnow() + timedelta(minutes=1)], ids=["naive", "future"]
)
def test_a_bad_cutoff_changes_nothing(system: System, cutoff: Callable[[], datetime]):
    add_job(system, "job_oldcompleted", JobStatus.COMPLETED, RETENTION * 2)
    with pytest.raises(ValueError):
        expire_media(system.store, system.media, cutoff())  # made now: "future" is relative to the call
    job = system.store.get("job_oldcompleted").job
    assert job.media_expired_at is None and system.media.read_bytes(job.video_path) == MP4


def test_each_job_is_marked_once_when_two_processes_expire_it(system: System):
    add_job(system, "job_oldcompleted", JobStatus.COMPLETED, RETENTION * 2)
    first = system.store.mark_media_expired("job_oldcompleted", utcnow())
    assert first is not None and first.media_expired_at is not None
    assert system.store.mark_media_expired("job_oldcompleted", utcnow()) is None  # the other instance: nothing to announce
    assert system.store.get("job_oldcompleted").job.media_expired_at == first.media_expired_at
    assert system.store.mark_media_expired("job_nosuchjob000", utcnow()) is None


def test_the_round_interval_honours_the_retention_without_spinning():
    assert round_interval(30, HOUSEKEEPING_INTERVAL) == HOUSEKEEPING_INTERVAL  # long retention: the usual pace
    assert round_interval(0.01, HOUSEKEEPING_INTERVAL) == pytest.approx(86.4)  # 14.4 min: rounds every tenth of it
    assert round_interval(0.00002, HOUSEKEEPING_INTERVAL) == MIN_ROUND_INTERVAL  # 1.7 s: never a busy loop


def after(seq: int, job_id: str, type_: str):
    return lambda event: event.get("jobId") == job_id and event["type"] == type_ and event["seq"] > seq


async def test_expired_media_answer_410_and_the_job_stays_listed(tmp_path: Path):
    # 0.00002 days is 1.7 s: a finished job's media go at the next round (every second).
    server = Server(tmp_path / "data", PROMPTREEL_MEDIA_RETENTION_DAYS="0.00002").start()
    stream = await open_stream(server)
    try:
        with server.client() as api:
            job = api.post("/api/v1/generate", json=local_job("a quiet harbour at dawn")).json()
            never_ran = api.post("/api/v1/generate", json=local_job("a lighthouse in fog")).json()
            cancelled = api.delete(f"/api/v1/jobs/{never_ran['id']}")  # still pending behind the first: no media
            assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text

            done = await stream.until(after(0, job["id"], "job_completed"))
            assert done["data"]["video_url"] and done["data"]["image_url"]
            # The retention round announces the change: a job_update after the job_completed.
            expiry = await stream.until(after(done["seq"], job["id"], "job_update"))
            assert expiry["data"]["status"] == "completed" and expiry["data"]["progress"] == 100

            state = api.get(f"/api/v1/jobs/{job['id']}").json()
            expired_at = state["metadata"]["mediaExpiredAt"]
            assert state["status"] == "completed" and state["image_url"] is None and state["video_url"] is None
            assert expired_at and state["updated_at"] == expiry["data"]["updated_at"]
            assert [step["status"] for step in state["steps"]] == ["completed", "completed"]
            assert not (tmp_path / "data" / "media" / job["id"]).exists()
            for kind in ("image", "video"):
                response = api.get(f"/api/v1/jobs/{job['id']}/download/{kind}")
                assert response.status_code == 410, response.text
                assert response.json() == {
                    "error": f"The {kind} of job '{job['id']}' was removed on {expired_at} (media retention);"
                    " the job itself is kept.",
                    "code": "MEDIA_EXPIRED",
                    "details": {"id": job["id"], "type": kind, "expiredAt": expired_at},
                }
                assert api.head(f"/api/v1/jobs/{job['id']}/download/{kind}").status_code == 410

            listed = api.get("/api/v1/jobs")
            assert listed.headers["X-Total-Count"] == "2"
            assert {item["id"] for item in listed.json()} == {job["id"], never_ran["id"]}
            # A job that never had media is expired too, but its download says "never made" (404), not 410.
            other = api.get(f"/api/v1/jobs/{never_ran['id']}").json()
            assert other["status"] == "cancelled" and other["metadata"]["mediaExpiredAt"], other
            missing = api.get(f"/api/v1/jobs/{never_ran['id']}/download/image")
            assert missing.status_code == 404 and missing.json()["code"] == "MEDIA_NOT_READY"
            assert api.get("/health").status_code == 200
    finally:
        await stream.connection.close()
        server.stop()

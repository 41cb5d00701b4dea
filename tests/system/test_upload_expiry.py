"""Uploads expire as set: removed (row and file) after PROMPTREEL_UPLOAD_EXPIRY_HOURS, unless an
unfinished job still has to take them; by the housekeeping of a real server, too."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backend.auth import LOCAL_USER
from backend.settings import Settings
from backend.store.models import Job, JobStatus, utcnow
from backend.system import System
from tests.support import pictures
from tests.support.server import Server


@pytest.fixture(params=["sqlite", "postgres"])
def system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[System]:
    database = {"DATABASE_URL": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    built = System(Settings(_env_file=None, PROMPTREEL_DATA_DIR=tmp_path, **database))
    built.migrate()
    yield built
    built.engine.dispose()


def add_job_using(system: System, job_id: str, upload_id: str) -> None:
    system.store.create(
        Job(
            id=job_id,
            prompt="slow push in",
            provider="upload",
            video_provider="local",
            image_size="1024x1024",
            video_duration=5,
            quality="standard",
            seed=7,
            extra={"sourceImage": upload_id, "fit": "crop"},
        )
    )


async def test_expired_uploads_go_unless_an_unfinished_job_uses_them(system: System):
    data = pictures.png()
    kept, used, fresh = [await system.uploads.create(io.BytesIO(data), len(data), "a.png") for _ in range(3)]
    add_job_using(system, "job_uses_the_upload", used.id)
    later = utcnow() + timedelta(hours=24, seconds=1)  # past the default expiry of all three

    assert system.uploads.expire(utcnow()) == []  # nothing has expired yet
    assert sorted(system.uploads.expire(later)) == sorted([kept.id, fresh.id])
    for removed in (kept.id, fresh.id):
        assert system.uploads.store.get(removed) is None
        assert system.media.read_upload(removed) is None
    # The one an unfinished job still needs stays, file and all, until that job has ended.
    assert system.media.read_upload(used.id) == system.uploads.read(used)
    system.store.update_job("job_uses_the_upload", status=JobStatus.COMPLETED.value)
    assert system.uploads.expire(later) == [used.id]
    assert system.media.read_upload(used.id) is None


async def test_uploads_kept_for_their_jobs_do_not_hide_the_ones_behind_them(system: System):
    """More kept uploads than one batch holds: the expired ones after them still go."""
    data = pictures.png()
    uploads = [await system.uploads.create(io.BytesIO(data), len(data), None) for _ in range(5)]
    for number, upload in enumerate(uploads[:3]):  # the three that expire first are in use
        add_job_using(system, f"job_keeps_upload_{number}", upload.id)
    later = utcnow() + timedelta(hours=25)
    assert sorted(system.uploads.expire(later, batch_size=2)) == sorted(upload.id for upload in uploads[3:])


async def test_an_expired_upload_is_gone_for_its_user_before_any_round(system: System):
    data = pictures.png()
    upload = await system.uploads.create(io.BytesIO(data), len(data), None)
    assert system.uploads.find(upload.id, LOCAL_USER) is not None
    # Time passes: the row's expiry moves into the past (no round of expiry runs here).
    with system.uploads.store._session() as session:
        row = session.get(type(upload), upload.id)
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
        session.add(row)
        session.commit()
    assert system.uploads.find(upload.id, LOCAL_USER) is None


def test_the_server_removes_uploads_as_they_expire(tmp_path: Path):
    # 0.0005 h = 1.8 s; the housekeeping round is then its minimum, 1 s.
    server = Server(tmp_path / "data", PROMPTREEL_UPLOAD_EXPIRY_HOURS="0.0005").start()
    try:
        with server.client() as api:
            upload = api.post("/api/v1/uploads", content=pictures.png(), headers={"Content-Type": "image/png"}).json()
            stored = tmp_path / "data" / "media" / "uploads" / upload["id"]
            assert stored.is_file()
            deadline = time.monotonic() + 30
            while stored.exists() and time.monotonic() < deadline:  # the state the server reports: its media folder
                time.sleep(0.2)
            assert not stored.exists(), "the upload's file outlived its expiry"
            assert api.get(f"/api/v1/uploads/{upload['id']}").json()["code"] == "UPLOAD_NOT_FOUND"
    finally:
        server.stop()

"""The job store on real SQLite and PostgreSQL databases, and its migrations."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from backend.database import create_db_engine, migrate
from backend.models import Job, JobStatus, StepKind, StepStatus
from backend.store import JobStore

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def make_job(job_id: str, prompt: str = "a lighthouse at dawn", status: str = JobStatus.PENDING) -> Job:
    return Job(id=job_id, prompt=prompt, provider="local", video_provider="local", status=status,
               image_size="1024x1024", video_duration=5, quality="standard", seed=7)


def ensure_postgres_running() -> None:
    probe = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True)
    if probe.returncode != 0:
        versions = sorted(Path("/etc/postgresql").iterdir())
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main", "start"], check=True)
        subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-t", "30"], check=True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    if shutil.which("pg_isready") is None:
        pytest.fail("PostgreSQL client tools are missing: .ci/run installs them")
    ensure_postgres_running()
    name = f"promptreel_test_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))  # name made here, not from input
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request) -> Iterator[JobStore]:
    url = request.getfixturevalue(f"{request.param}_url")
    engine = create_db_engine(url)
    migrate(engine)
    yield JobStore(engine)
    engine.dispose()


def test_create_get_update_list_delete(store: JobStore):
    for index in range(5):
        store.create(make_job(f"job_store{index:05d}", prompt=f"scene {index} 100% pure_joy" if index == 3 else f"scene {index}"))
    record = store.get("job_store00002")
    assert record is not None and [s.kind for s in record.steps] == [StepKind.IMAGE, StepKind.VIDEO]
    assert record.job.created_at.tzinfo is not None

    store.update_step("job_store00002", StepKind.IMAGE, status=StepStatus.RUNNING.value, progress=40, remote_id="r-1")
    store.append_log("job_store00002", StepKind.IMAGE, "first line")
    store.append_log("job_store00002", StepKind.IMAGE, "second line")
    store.update_job("job_store00002", status=JobStatus.GENERATING_IMAGE.value, progress=12)
    step = store.get("job_store00002").step(StepKind.IMAGE)
    assert (step.status, step.progress, step.remote_id, step.log) == ("running", 40, "r-1", ["first line", "second line"])

    records, total = store.list(limit=2)
    assert total == 5 and [r.job.id for r in records] == ["job_store00004", "job_store00003"]
    assert [r.job.id for r in store.list(search="100%")[0]] == ["job_store00003"]
    assert [r.job.id for r in store.list(search="_joy")[0]] == ["job_store00003"]
    assert store.list(search="scene 9")[1] == 0
    assert [r.job.id for r in store.list(statuses=["generating_image"])[0]] == ["job_store00002"]
    assert store.unfinished_ids()[0] == "job_store00000"
    assert store.count_by_status() == {"pending": 4, "generating_image": 1}

    assert store.delete("job_store00001") and store.get("job_store00001") is None
    assert not store.delete("job_store00001")


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(sqlite_url: str):
    engine = create_db_engine(sqlite_url)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000
    engine.dispose()


def test_migrating_again_keeps_every_job(sqlite_url: str):
    engine = create_db_engine(sqlite_url)
    migrate(engine, "0001")
    JobStore(engine).create(make_job("job_keepme0001", status=JobStatus.COMPLETED))
    migrate(engine)  # a start after an upgrade
    migrate(engine)  # and another
    assert JobStore(engine).get("job_keepme0001").job.status == "completed"
    assert {"jobs", "job_steps", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()

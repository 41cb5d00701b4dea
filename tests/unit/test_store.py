"""The job store on real SQLite and PostgreSQL databases, and its migrations."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from backend.store.database import create_db_engine, migrate
from backend.store.jobs import JobFinished, JobStore
from backend.store.models import Job, JobStatus, StepKind, StepStatus, utcnow


def make_job(job_id: str, prompt: str = "a lighthouse at dawn", status: str = JobStatus.PENDING) -> Job:
    return Job(
        id=job_id,
        prompt=prompt,
        provider="local",
        video_provider="local",
        status=status,
        image_size="1024x1024",
        video_duration=5,
        quality="standard",
        seed=7,
    )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


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
    assert store.unfinished_ids(utcnow())[0] == "job_store00000"
    assert store.count_by_status() == {"pending": 4, "generating_image": 1}

    assert store.delete("job_store00001") and store.get("job_store00001") is None
    assert not store.delete("job_store00001")


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(sqlite_url: str):
    engine = create_db_engine(sqlite_url)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000
    engine.dispose()


def test_upgrading_keeps_every_job(sqlite_url: str):
    engine = create_db_engine(sqlite_url)
    migrate(engine, "0001")  # a database made by the first release
    with engine.begin() as connection:  # a job as that release stored it, without the later columns
        connection.execute(
            text(
                "INSERT INTO jobs (id, prompt, provider, video_provider, status, progress, image_size, video_duration,"
                " quality, seed, extra, image_cost, video_cost, created_at, updated_at)"
                " VALUES ('job_keepme0001', 'an old job', 'local', 'local', 'completed', 100, '1024x1024', 5, 'standard', 1,"
                " '{}', 0, 0, '2026-01-01 10:00:00.000000', '2026-01-01 10:05:00.000000')"
            )
        )
    migrate(engine)  # the start after an upgrade
    migrate(engine)  # and another start
    record = JobStore(engine).get("job_keepme0001")
    assert (record.job.prompt, record.job.status, record.job.worker_id) == ("an old job", "completed", None)
    assert record.job.created_at.year == 2026 and record.job.created_at.tzinfo is not None
    assert {"jobs", "job_steps", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_a_job_is_claimed_by_one_live_process_at_a_time(store: JobStore):
    store.create(make_job("job_lease00001"))
    now = utcnow()
    stale_before = now - timedelta(seconds=15)
    assert store.claim("job_lease00001", "server-a", stale_before)
    assert store.claim("job_lease00001", "server-a", stale_before)  # its own again
    assert not store.claim("job_lease00001", "cli-b", stale_before)  # a live owner keeps it
    assert store.unfinished_ids(stale_before) == []
    # The owner stops beating: after the stale limit anybody may take the job over.
    assert store.unfinished_ids(now + timedelta(seconds=1)) == ["job_lease00001"]
    assert store.claim("job_lease00001", "cli-b", now + timedelta(seconds=1))
    assert store.heartbeat("server-a", ["job_lease00001"]) == []  # no longer its job: no beat, no news
    store.update_job("job_lease00001", status=JobStatus.CANCELLED.value)
    assert store.heartbeat("cli-b", ["job_lease00001"]) == ["job_lease00001"]  # its owner learns of the cancel
    store.release("cli-b", ["job_lease00001"])
    assert store.claim("job_lease00001", "server-a", stale_before)  # released: free at once


def test_every_page_matches_the_newest_first_order(store: JobStore):
    # Pages past the middle are read from the oldest end; with ties in created_at, every offset
    # must still give the same slice as one newest-first list.
    moment = utcnow()
    for index in range(7):
        job = make_job(f"job_page{index:05d}", status=JobStatus.COMPLETED if index % 2 else JobStatus.FAILED)
        job.created_at = moment - timedelta(seconds=index // 2)  # pairs share a time: the id breaks the tie
        store.create(job)
    newest_first = [r.job.id for r in store.list(limit=100)[0]]
    # Newest first: by time, then by id (descending) within a time.
    assert newest_first == sorted(newest_first, key=lambda job_id: (int(job_id[-5:]) // 2, [-ord(c) for c in job_id]))
    for offset in range(9):
        assert [r.job.id for r in store.list(limit=3, offset=offset)[0]] == newest_first[offset : offset + 3]
    completed = [r.job.id for r in store.list(statuses=["completed"], limit=100)[0]]
    for offset in range(5):
        assert [r.job.id for r in store.list(statuses=["completed"], limit=2, offset=offset)[0]] == completed[offset : offset + 2]


def test_hot_path_writes_return_what_was_stored(store: JobStore):
    store.create(make_job("job_hot00001"))
    step, job = store.record_progress("job_hot00001", StepKind.IMAGE, 50, 15)
    assert (step.progress, job.progress) == (50, 15)
    step, job = store.record_progress("job_hot00001", StepKind.IMAGE, 40, 12)
    assert step.progress == 40 and job is None  # the job's progress never goes down
    with store.transaction() as connection:
        store.update_job("job_hot00001", connection=connection, status=JobStatus.GENERATING_VIDEO.value)
        store.update_step("job_hot00001", StepKind.VIDEO, connection=connection, status=StepStatus.RUNNING.value)
    record = store.get("job_hot00001")
    assert (record.job.status, record.step(StepKind.VIDEO).status, record.job.progress) == ("generating_video", "running", 15)
    record.job.progress = 20  # the models it hands out behave as models
    assert record.job.progress == 20 and store.status("job_hot00001") == "generating_video" and store.status("nope") is None
    with pytest.raises(RuntimeError), store.transaction() as connection:  # a failed block stores nothing
        store.update_job("job_hot00001", connection=connection, status=JobStatus.FAILED.value)
        raise RuntimeError("boom")
    assert store.status("job_hot00001") == "generating_video"
    with pytest.raises(KeyError):
        store.update_job("job_missing", status=JobStatus.FAILED.value)


def test_finished_is_final(store: JobStore):
    """A finished job never changes status, progress, cost or steps again; the losing writer is told."""
    store.create(make_job("job_final00001"))
    with store.transaction() as connection:
        store.update_job("job_final00001", connection=connection, status=JobStatus.GENERATING_VIDEO.value, image_cost=0.04)
        store.update_step(
            "job_final00001", StepKind.IMAGE, connection=connection, status=StepStatus.COMPLETED.value, progress=100
        )
        store.update_step("job_final00001", StepKind.VIDEO, connection=connection, status=StepStatus.RUNNING.value, progress=10)
    assert store.append_log("job_final00001", StepKind.VIDEO, "rendering")
    # Another process cancels: the job and its open steps end in one transaction.
    job, closed = store.close_job("job_final00001", JobStatus.CANCELLED, StepStatus.CANCELLED, "cancelled")
    assert job.status == "cancelled" and [(s.kind, s.status, s.log) for s in closed] == [
        ("video_generation", "cancelled", ["rendering", "cancelled"])
    ]
    before = store.get("job_final00001")

    # The owner, late, writes its step's result, its progress, its completion: each loses, nothing changes.
    for write in (
        lambda: store.update_job("job_final00001", video_path="job_final00001/video.mp4", video_cost=0.25),
        lambda: store.update_job("job_final00001", status=JobStatus.COMPLETED.value, progress=100),
        lambda: store.record_progress("job_final00001", StepKind.VIDEO, 99, 99),
        lambda: store.update_step("job_final00001", StepKind.VIDEO, status=StepStatus.COMPLETED.value, progress=100),
        lambda: store.update_step("job_final00001", StepKind.IMAGE, progress=50),  # a step that ended
        lambda: store.close_job("job_final00001", JobStatus.FAILED, StepStatus.FAILED, "failed: late"),
    ):
        with pytest.raises(JobFinished) as lost:
            write()
        assert lost.value.status == "cancelled"
    assert not store.append_log("job_final00001", StepKind.VIDEO, "99%")  # log lines after the end are dropped
    assert store.get("job_final00001") == before

    # The one change allowed: a charge already incurred, with its line. Cost only goes up.
    job = store.record_after_end(
        "job_final00001", StepKind.VIDEO, "result came after the cancel: discarded, $0.25 charged", charge=0.25
    )
    assert (job.status, job.progress, job.image_cost, job.video_cost, job.total_cost) == (
        "cancelled",
        before.job.progress,
        0.04,
        0.25,
        0.29,
    )
    assert store.get("job_final00001").step(StepKind.VIDEO).log[-1].endswith("$0.25 charged")
    with pytest.raises(ValueError):
        store.record_after_end("job_final00001", StepKind.VIDEO, "refund", charge=-0.25)
    assert store.get("job_final00001").job.video_cost == 0.25

    # The first finishing write wins: here the completion, and the cancel after it loses.
    store.create(make_job("job_final00002"))
    store.update_job("job_final00002", status=JobStatus.COMPLETED.value, progress=100)
    with pytest.raises(JobFinished) as lost:
        store.close_job("job_final00002", JobStatus.CANCELLED, StepStatus.CANCELLED, "cancelled")
    assert lost.value.status == "completed" and store.status("job_final00002") == "completed"
    with pytest.raises(KeyError):
        store.close_job("job_missing", JobStatus.CANCELLED, StepStatus.CANCELLED, "cancelled")


def test_a_cancel_waiting_on_the_owners_transaction_loses(store: JobStore):
    """The owner's last write holds the job's row; another process's cancel waits for it, then
    re-reads the row and loses (PostgreSQL: the conditional UPDATE is checked again after the lock)."""
    store.create(make_job("job_final00003"))
    store.update_job("job_final00003", status=JobStatus.GENERATING_VIDEO.value)
    outcome: list[BaseException | Any] = []
    with store.transaction() as connection:
        store.complete_job("job_final00003", StepKind.VIDEO, connection=connection, video_path="job_final00003/video.mp4")

        def cancel() -> None:
            try:
                outcome.append(store.close_job("job_final00003", JobStatus.CANCELLED, StepStatus.CANCELLED, "cancelled"))
            except BaseException as error:
                outcome.append(error)

        other = threading.Thread(target=cancel)
        other.start()
        if store.engine.dialect.name == "postgresql":  # see it wait for the row's lock (no event to await: its state)
            waiting = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE jobs%'")
            deadline = time.monotonic() + 10
            while True:
                with store.engine.connect() as watcher:  # a transaction of its own each time: it sees pg_stat_activity anew
                    if watcher.execute(waiting).scalar_one():
                        break
                assert time.monotonic() < deadline, f"the cancel never waited for the owner's lock: {outcome}"
                time.sleep(0.01)
    other.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], JobFinished) and outcome[0].status == "completed", outcome
    record = store.get("job_final00003")
    assert (record.job.status, record.step(StepKind.VIDEO).status) == ("completed", "completed")

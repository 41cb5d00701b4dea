"""Idempotency keys (backend/jobs/idempotency.py) on a real SQLite store: a key older than 24 h
answers nothing and is taken again; removing the job frees its key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from backend.jobs.idempotency import KEY_HOURS, IdempotencyKeyReused, IdempotencyKeys, KeyTaken
from backend.jobs.request import validate_request
from backend.store.database import create_db_engine, migrate
from backend.store.jobs import JobStore
from backend.store.models import IdempotencyKey, Job, utcnow

REQUEST = validate_request({"prompt": "a lighthouse", "provider": "local"})


def make_job(store: JobStore, job_id: str) -> None:
    store.create(
        Job(
            id=job_id,
            prompt="a lighthouse",
            provider="local",
            video_provider="local",
            image_size="1024x1024",
            video_duration=5,
            quality="standard",
            seed=1,
        )
    )


def test_an_expired_key_is_taken_again_and_a_removed_job_frees_its_key(tmp_path: Path):
    engine = create_db_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate(engine)
    store, keys = JobStore(engine), IdempotencyKeys(engine)
    try:
        make_job(store, "job_first")
        with engine.begin() as connection:
            keys.claim(connection, "alice", "k1", REQUEST, "job_first")
        assert keys.job_for("alice", "k1", REQUEST) == "job_first"
        assert keys.job_for("bob", "k1", REQUEST) is None  # keys are per user
        with pytest.raises(IdempotencyKeyReused):
            keys.job_for("alice", "k1", validate_request({"prompt": "another", "provider": "local"}))
        make_job(store, "job_second")
        with pytest.raises(KeyTaken), engine.begin() as connection:
            keys.claim(connection, "alice", "k1", REQUEST, "job_second")

        with engine.begin() as connection:  # a day and an hour later
            connection.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=KEY_HOURS + 1)))
        assert keys.job_for("alice", "k1", REQUEST) is None
        with engine.begin() as connection:
            keys.claim(connection, "alice", "k1", REQUEST, "job_second")
        assert keys.job_for("alice", "k1", REQUEST) == "job_second"

        store.delete("job_second")
        assert keys.job_for("alice", "k1", REQUEST) is None
    finally:
        engine.dispose()

"""Spending limits (backend/jobs/budgets.py) on real SQLite and PostgreSQL job stores."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from backend.jobs.budgets import Budget, BudgetExceeded, Budgets, parse_budgets, period_bounds
from backend.store.database import create_db_engine, migrate
from backend.store.jobs import JobStore
from backend.store.models import Job, JobStatus, utcnow

IDS = (f"job_budget{index}" for index in itertools.count())
ESTIMATE = 0.5  # what every unfinished job is estimated at here


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path) -> Iterator[JobStore]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    engine = create_db_engine(url)
    migrate(engine)
    yield JobStore(engine)
    engine.dispose()


def add_job(store: JobStore, owner: str | None, status: str, cost: float = 0.0, created_at: datetime | None = None) -> None:
    job = Job(
        id=next(IDS),
        prompt="a lighthouse",
        provider="local",
        video_provider="local",
        status=status,
        image_size="1024x1024",
        video_duration=5,
        quality="standard",
        seed=1,
        owner=owner,
        image_cost=cost,
    )
    if created_at is not None:
        job.created_at = created_at
    store.create(job)


def budgets(store: JobStore, text: str) -> Budgets:
    return Budgets(store.engine, parse_budgets(text), lambda job: ESTIMATE)


def test_a_limit_may_be_reached_exactly_but_not_passed(store: JobStore):
    add_job(store, "alice", JobStatus.COMPLETED, cost=1.25)
    add_job(store, "alice", JobStatus.FAILED, cost=0.25)
    add_job(store, "alice", JobStatus.GENERATING_VIDEO, cost=0.1)  # unfinished: its estimate counts, not its cost so far
    add_job(store, "bob", JobStatus.COMPLETED, cost=7.0)  # someone else's
    add_job(store, "alice", JobStatus.COMPLETED, cost=9.0, created_at=utcnow() - timedelta(days=40))  # an earlier month
    limits = budgets(store, "alice:3/day")
    assert limits.spent("alice", period_bounds("day", utcnow())[0]) == 2.0
    limits.check("alice", 1.0)  # 2.0 + 1.0 == 3: exactly at the limit
    limits.check("bob", 100.0)  # no limit of bob's
    with pytest.raises(BudgetExceeded) as refused:
        limits.check("alice", 1.0001)
    details = refused.value.details
    assert refused.value.status_code == 402 and refused.value.code == "BUDGET_EXCEEDED"
    assert details["limit"] == 3.0 and details["spent"] == 2.0 and details["estimate"] == 1.0001
    assert details["scope"] == "alice" and details["period"] == "day"
    assert "past the daily limit of $3.00 ($2.0000 spent so far)" in refused.value.message
    assert details["resetsAt"] == period_bounds("day", utcnow())[1].strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_service_limit_counts_every_user(store: JobStore):
    add_job(store, "alice", JobStatus.COMPLETED, cost=4.0)
    add_job(store, "bob", JobStatus.PENDING)  # estimated 0.5
    add_job(store, None, JobStatus.COMPLETED, cost=0.5)
    limits = budgets(store, "alice:100/day,*:10/month")
    limits.check("carol", 5.0)  # 5.0 + 5.0 == 10
    with pytest.raises(BudgetExceeded) as refused:
        limits.check("carol", 5.01)
    assert refused.value.details["scope"] == "*" and refused.value.details["spent"] == 5.0
    usage = limits.usage("alice")
    assert usage["spent"]["month"] == 4.0
    assert [(limit["scope"], limit["spent"], limit["remaining"]) for limit in usage["limits"]] == [
        ("alice", 4.0, 96.0),
        ("*", 5.0, 5.0),
    ]


def test_budgets_are_parsed_strictly():
    assert parse_budgets(" alice:20/day, bob:100.5/month ,*:500/month") == [
        Budget("alice", 20.0, "day"),
        Budget("bob", 100.5, "month"),
        Budget("*", 500.0, "month"),
    ]
    assert parse_budgets("") == [] and parse_budgets(None) == []
    for bad in ("alice:20", "alice:-1/day", "alice:20/week", ":5/day", "alice:x/day"):
        with pytest.raises(ValueError, match="PROMPTREEL_BUDGETS"):
            parse_budgets(bad)


def test_periods_are_utc_calendar_days_and_months():
    moment = datetime(2026, 12, 31, 23, 59, 59)
    assert period_bounds("day", moment) == (datetime(2026, 12, 31), datetime(2027, 1, 1))
    assert period_bounds("month", moment) == (datetime(2026, 12, 1), datetime(2027, 1, 1))
    assert period_bounds("month", datetime(2026, 1, 31, 12)) == (datetime(2026, 1, 1), datetime(2026, 2, 1))

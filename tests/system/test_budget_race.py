"""Spending limits hold when creates race on two instances of one database (SQLite: two processes
on one machine; PostgreSQL: several hosts): two $0.25 jobs against a limit of $0.25 make one job,
whatever the interleaving, because each create checks again in the transaction that stores its
job, one at a time (JobService.create -> Budgets.hold).

Each instance is a `System` of its own on the shared database; a create runs in a thread of its
own (its own event loop), held at a chosen point by an event while the other create runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from backend.errors import ApiError
from backend.jobs.budgets import BudgetExceeded
from backend.jobs.request import GenerateRequest
from backend.settings import Settings
from backend.system import System
from tests.fakes import provider_env
from tests.fakes.fake_runway import FakeRunway

WAIT_SECONDS = 30
#: A free local picture and five seconds of Runway's gen4_turbo (5 credits a second): $0.25.
REQUEST = GenerateRequest.model_validate(
    {
        "prompt": "a lighthouse in fog",
        "provider": "local",
        "settings": {"videoProvider": "runway", "videoModel": "gen4_turbo", "videoDuration": 5},
    }
)


class Create:
    """`JobService.create(REQUEST)` on `system` in a thread; with `hold_in`, stopped right after
    that method of the service has run, until `finish`."""

    def __init__(self, system: System):
        self.system = system
        self.held = threading.Event()
        self.released = threading.Event()
        self.job_id: str | None = None
        self.error: ApiError | None = None
        self.thread = threading.Thread(target=self._run, name="create")

    def hold_after(self, owner: object, name: str, monkeypatch: pytest.MonkeyPatch) -> Create:
        method: Callable[..., Any] = getattr(owner, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if threading.current_thread() is self.thread:
                self.held.set()
                assert self.released.wait(WAIT_SECONDS), "the test never released the create"
            return result

        monkeypatch.setattr(owner, name, wrapped)
        return self

    def _run(self) -> None:
        try:
            self.job_id = asyncio.run(self.system.jobs.create(REQUEST)).job.id
        except ApiError as error:
            self.error = error
        finally:
            self.held.set()  # a create that ended before its hold does not leave the test waiting

    def start(self) -> Create:
        self.thread.start()
        return self

    def finish(self) -> Create:
        self.released.set()
        self.thread.join(WAIT_SECONDS)
        assert not self.thread.is_alive()
        return self


@pytest.fixture(params=["sqlite", "postgres"])
def instances(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[System]]:
    database = request.getfixturevalue("postgres_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'shared.db'}"
    with FakeRunway() as runway:
        systems = []
        for name in ("a", "b"):
            env = {"DATABASE_URL": database, "PROMPTREEL_BUDGETS": "*:0.25/day", **provider_env(runway=runway)}
            system = System(Settings(_env_file=None, PROMPTREEL_DATA_DIR=tmp_path / name, **env))  # type: ignore[arg-type]
            system.migrate()

            async def enqueue(job_id: str) -> None:  # the jobs stay pending: the race is about their creation
                return None

            monkeypatch.setattr(system.jobs.queue, "enqueue", enqueue)
            systems.append(system)
        yield systems
        for system in systems:
            system.engine.dispose()


def jobs_stored(system: System) -> int:
    return system.store.list(limit=10)[1]


def test_a_create_that_checked_before_another_committed_is_refused_when_it_stores(
    instances: list[System], monkeypatch: pytest.MonkeyPatch
):
    """A passes the early check (nothing spent yet) and is held before its transaction; B's job is
    made meanwhile; A's check in its own transaction then sees B's job and refuses."""
    a, b = instances
    first = Create(a).hold_after(a.jobs.rate_limiter, "check", monkeypatch).start()
    assert first.held.wait(WAIT_SECONDS) and first.error is None, first.error
    asyncio.run(b.jobs.create(REQUEST))  # B's job: $0.25, the whole limit
    first.finish()
    assert isinstance(first.error, BudgetExceeded), f"job {first.job_id} was made past the limit"
    assert first.error.details["spent"] == 0.25 and first.error.details["estimate"] == 0.25
    assert jobs_stored(a) == 1


@pytest.mark.parametrize("instances", ["postgres"], indirect=True)
def test_a_create_waits_for_another_inside_its_transaction_and_then_is_refused(
    instances: list[System], monkeypatch: pytest.MonkeyPatch
):
    """PostgreSQL (READ COMMITTED: A's uncommitted job is invisible to B): A has stored its job and
    passed its check, uncommitted, when B checks; B waits for A's lock, then sees A's job."""
    a, b = instances
    first = Create(a).hold_after(a.jobs.budgets, "hold", monkeypatch).start()
    assert first.held.wait(WAIT_SECONDS) and first.error is None, first.error
    second = Create(b).start()
    # The state the server reports: B waiting for a lock (or, wrongly, done without one).
    waited = False
    while second.thread.is_alive() and not waited:
        with a.engine.connect() as connection:
            waited = connection.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar_one() > 0
        second.thread.join(0.02)
    first.finish()
    second.finish()
    assert waited, "B checked without waiting for A"
    assert first.error is None and isinstance(second.error, BudgetExceeded), (first.error, second.error)
    assert jobs_stored(a) == 1

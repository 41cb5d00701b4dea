"""Subscribe from a point (backend/events/catch_up.py) against a real event bus and log on SQLite:
events published before the connection, while its subscription queues, during the catch-up's
read and during its sends, and afterwards, reach the client each once, in seq order."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from backend.events.bus import EventBus, Subscription
from backend.events.catch_up import CatchUp
from backend.events.log import Event, EventLog
from backend.store.database import create_db_engine, migrate
from backend.store.jobs import JobStore
from backend.store.models import Job

JOB_IDS = (f"job_catch{index}" for index in itertools.count())


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path_factory.mktemp('catch_up') / 'jobs.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def new_job(engine: Engine) -> str:
    job = Job(
        id=next(JOB_IDS),
        prompt="a lighthouse",
        provider="local",
        video_provider="local",
        image_size="1024x1024",
        video_duration=5,
        quality="standard",
        seed=1,
    )
    JobStore(engine).create(job)
    return job.id


def publish(bus: EventBus, job_id: str, count: int) -> None:
    for _ in range(count):
        bus.publish("step_update", job_id, {"id": "image_generation"})


def forward(subscription: Subscription, catch_up: CatchUp, following: bool, sent: list[Event]) -> None:
    """What /ws's forwarding does with the events queued so far (the caller holds the lock)."""
    for event in subscription.drain(10_000):
        if following and catch_up.admit(event):
            sent.append(event)


@settings(max_examples=40, deadline=None)
@given(
    before=st.integers(0, 4),
    queued=st.integers(0, 4),
    forwarded_early=st.booleans(),
    during_read=st.integers(0, 3),
    during_send=st.integers(0, 3),
    later=st.integers(0, 3),
    after=st.integers(0, 10),
    page=st.integers(1, 4),
)
def test_no_event_is_lost_or_doubled_around_the_catch_up(
    engine: Engine,
    before: int,
    queued: int,
    forwarded_early: bool,
    during_read: int,
    during_send: int,
    later: int,
    after: int,
    page: int,
) -> None:
    async def scenario() -> None:
        bus = EventBus(EventLog(engine))
        job_id = new_job(engine)
        publish(bus, job_id, before)  # stored before the connection: only the log has them
        sent: list[Event] = []
        with bus.subscribe() as subscription:
            publish(bus, job_id, queued)  # in the log and in the queue

            reads: list[int] = []

            def read_then_publish(job: str, after_seq: int, limit: int) -> list[Event]:
                events = log.after(job, after_seq, limit)
                if not reads:  # stored after the first read (scheduled onto the loop from this thread): in the queue
                    for _ in range(during_read):
                        bus.publish("step_update", job, {"id": "image_generation"})
                reads.append(after_seq)
                return events

            catch_up = CatchUp(read_then_publish, page)  # a small page: several reads, events stored between them too
            if forwarded_early:
                async with catch_up.lock:  # forwarding ran before the subscribe came: not followed yet, dropped
                    forward(subscription, catch_up, False, sent)

            async def send(events: list[Event]) -> None:
                if not sent:  # stored while the first page goes out: in the queue
                    publish(bus, job_id, during_send)
                sent.extend(events)
                await asyncio.sleep(0)  # the loop runs what the read scheduled

            async with catch_up.lock:
                await catch_up.start(job_id, after, send)
            for _ in range(2):  # the events scheduled from the read's thread have run by now
                await asyncio.sleep(0)
            async with catch_up.lock:
                forward(subscription, catch_up, True, sent)
            publish(bus, job_id, later)
            async with catch_up.lock:
                forward(subscription, catch_up, True, sent)
        total = bus.event_log.after(job_id, 0, 10_000) if bus.event_log else []
        assert [event["seq"] for event in sent] == list(range(after + 1, len(total) + 1))

    log = EventLog(engine)
    asyncio.run(scenario())


def test_a_failed_read_leaves_the_job_not_followed() -> None:
    def missing(job_id: str, after: int, limit: int) -> list[Event]:
        raise LookupError(job_id)

    async def scenario() -> None:
        catch_up = CatchUp(missing)
        async with catch_up.lock:
            with pytest.raises(LookupError):
                await catch_up.start("job_none", 0, lambda events: asyncio.sleep(0))
        assert catch_up.admit({"type": "job_update", "jobId": "job_none", "data": {}, "seq": 1})

    asyncio.run(scenario())


def test_unsubscribing_forgets_the_point() -> None:
    async def scenario() -> None:
        catch_up = CatchUp(lambda job_id, after, limit: [{"type": "job_update", "jobId": job_id, "data": {}, "seq": 3}])
        async with catch_up.lock:
            await catch_up.start("job_x", 2, lambda events: asyncio.sleep(0))
        assert not catch_up.admit({"type": "job_update", "jobId": "job_x", "data": {}, "seq": 3})
        assert catch_up.admit({"type": "job_update", "jobId": "job_x", "data": {}, "seq": 4})
        catch_up.forget("job_x")
        assert catch_up.admit({"type": "job_update", "jobId": "job_x", "data": {}, "seq": 2})

    asyncio.run(scenario())

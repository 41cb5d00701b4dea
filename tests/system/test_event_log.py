"""Stored, numbered events: catch-up over REST, and PostgreSQL LISTEN/NOTIFY between instances,
including lost notifications and a dropped LISTEN connection."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from backend.events.log import MAX_NOTIFY_BYTES
from backend.settings import Settings
from backend.store.models import Job, utcnow
from backend.system import System
from tests.support.jobs import local_job, unsigned
from tests.support.streams import ends_job, open_stream

pytestmark = pytest.mark.timeout(120)


def make_job(system: System, job_id: str) -> str:
    system.store.create(
        Job(
            id=job_id,
            prompt="p",
            provider="local",
            video_provider="local",
            image_size="1024x1024",
            video_duration=5,
            quality="standard",
            seed=1,
        )
    )
    return job_id


def test_sqlite_numbers_every_job_from_one_without_gaps(tmp_path):
    system = System(Settings(PROMPTREEL_DATA_DIR=tmp_path))
    system.migrate()
    heard = []
    system.bus.listen(heard.append)
    first, second = make_job(system, "job_eventsA0001"), make_job(system, "job_eventsB0001")
    for index in range(3):
        system.bus.publish("step_update", first, {"n": index})
        system.bus.publish("step_update", second, {"n": index})
    assert [event["seq"] for event in heard if event["jobId"] == first] == [1, 2, 3]
    assert [event["seq"] for event in heard if event["jobId"] == second] == [1, 2, 3]
    assert system.event_log.after(first, 1, limit=10) == [e for e in heard if e["jobId"] == first][1:]
    assert system.event_log.after(first, 0, limit=10, upto=2) == [e for e in heard if e["jobId"] == first][:2]
    # A removed job's events go with it; removal itself is still heard, without a number.
    system.store.delete(second)
    system.bus.publish("job_removed", second, {"id": second})
    assert heard[-1] == {"type": "job_removed", "jobId": second, "data": {"id": second}}
    assert system.event_log.after(second, 0, limit=10) == []
    # Pruning drops old events only.
    assert system.event_log.prune(utcnow() - timedelta(hours=1)) == 0
    assert system.event_log.prune(utcnow() + timedelta(seconds=1)) == 3
    system.engine.dispose()


async def test_client_that_reconnects_catches_up_over_rest(server):
    """Read part of a job's events on /ws, drop the connection, then read the rest by number."""
    stream, observer = await open_stream(server), await open_stream(server)
    with server.client() as api:
        job = api.post("/api/v1/generate", json=local_job("a paper boat on a pond")).json()
        await stream.until(lambda event: event.get("jobId") == job["id"] and event["type"] == "step_update", timeout=60)
        await stream.connection.close()  # the client goes away mid-job
        seen = stream.of_job(job["id"])
        assert [event["seq"] for event in seen] == list(range(1, len(seen) + 1))

        await observer.until(ends_job(job["id"]))
        await observer.connection.close()
        assert api.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "completed"
        missed = api.get(f"/api/v1/jobs/{job['id']}/events", params={"after": seen[-1]["seq"]}).json()
        assert [event["seq"] for event in missed] == list(range(seen[-1]["seq"] + 1, seen[-1]["seq"] + 1 + len(missed)))
        assert missed[-1]["type"] == "job_completed"
        assert missed[-1]["data"]["video_url"].startswith(f"{server.url}/api/v1/jobs/{job['id']}/download/video?expires=")
        everything = api.get(f"/api/v1/jobs/{job['id']}/events").json()
        frames = [{**event, "data": unsigned(event["data"])} for event in [*seen, *missed]]
        assert [
            {**event, "data": unsigned(event["data"])} for event in everything
        ] == frames  # the same frames /ws sent, in order
        assert len(api.get(f"/api/v1/jobs/{job['id']}/events", params={"limit": 2}).json()) == 2

        assert api.get("/api/v1/jobs/job_doesnotexist1/events").json()["code"] == "JOB_NOT_FOUND"
        bad = api.get(f"/api/v1/jobs/{job['id']}/events", params={"after": -1})
        assert bad.status_code == 422 and bad.json()["code"] == "VALIDATION_ERROR"


# -- PostgreSQL: two instances in one process, each with its own engine and LISTEN connection ---------


@pytest.fixture
async def two_instances(tmp_path, postgres_url):
    instances = []
    for name in ("a", "b"):
        system = System(Settings(PROMPTREEL_DATA_DIR=tmp_path / name, DATABASE_URL=postgres_url))
        await system.start()
        instances.append(system)
    yield instances
    for system in instances:
        await system.stop()


class Heard:
    """Events one instance's bus delivered, with a way to await a count of them."""

    def __init__(self, system: System):
        self.events: list[dict] = []
        self._changed = asyncio.Event()
        system.bus.listen(self._on_event)

    def _on_event(self, event: dict) -> None:
        self.events.append(event)
        self._changed.set()

    async def until(self, count: int, timeout: float = 20) -> list[dict]:
        async def wait() -> None:
            while len(self.events) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)
        return self.events


async def test_every_instance_hears_every_event_once_in_order(two_instances):
    a, b = two_instances
    heard_a, heard_b = Heard(a), Heard(b)
    job_id = make_job(a, "job_relay000001")
    for index in range(20):
        (a if index % 2 else b).bus.publish("step_update", job_id, {"n": index})  # both instances publish for one job
    for heard in (heard_a, heard_b):
        events = await heard.until(20)
        assert [event["seq"] for event in events] == list(range(1, 21))
        assert [event["data"]["n"] for event in events] == list(range(20))
    a.bus.publish("job_update", job_id, {"n": "last"})  # anything heard twice would come before it
    for heard in (heard_a, heard_b):
        assert [event["seq"] for event in await heard.until(21)] == list(range(1, 22))


async def test_lost_notification_is_read_back_before_the_next_event(two_instances, postgres_url):
    a, b = two_instances
    heard_b = Heard(b)
    job_id = make_job(a, "job_relay000002")
    a.bus.publish("step_update", job_id, {"n": 0})
    await heard_b.until(1)
    # An event stored without its NOTIFY, as if the notification had been lost.
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE jobs SET event_seq = event_seq + 1 WHERE id = :id"), {"id": job_id})
        connection.execute(
            text(
                "INSERT INTO job_events (job_id, seq, type, data, created_at) VALUES (:id, 2, 'step_update', '{\"n\": 1}', now())"
            ),
            {"id": job_id},
        )
    engine.dispose()
    a.bus.publish("step_update", job_id, {"n": 2})
    events = await heard_b.until(3)
    assert [(event["seq"], event["data"]["n"]) for event in events] == [(1, 0), (2, 1), (3, 2)]


async def test_event_too_big_for_notify_is_read_back(two_instances):
    a, b = two_instances
    heard_b = Heard(b)
    job_id = make_job(a, "job_relay000003")
    big = {"text": "x" * (MAX_NOTIFY_BYTES + 100)}
    a.bus.publish("job_update", job_id, big)
    events = await heard_b.until(1)
    assert events[0] == {"type": "job_update", "jobId": job_id, "data": big, "seq": 1}


async def test_relay_reconnects_and_catches_up_on_what_it_missed(two_instances, postgres_url):
    a, b = two_instances
    heard_b = Heard(b)
    job_id = make_job(a, "job_relay000004")
    a.bus.publish("step_update", job_id, {"n": 0})
    await heard_b.until(1)
    engine = create_engine(postgres_url)
    with engine.connect() as connection:  # the database drops B's LISTEN connection
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": b.relay.backend_pid})
    engine.dispose()
    for index in range(1, 6):  # published before B is back: their NOTIFYs never reach it
        a.bus.publish("step_update", job_id, {"n": index})
    events = await heard_b.until(6)
    assert [event["seq"] for event in events] == [1, 2, 3, 4, 5, 6]
    a.bus.publish("step_update", job_id, {"n": 6})  # and it listens again
    assert [event["seq"] for event in await heard_b.until(7)] == list(range(1, 8))

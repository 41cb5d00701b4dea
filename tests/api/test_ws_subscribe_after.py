"""/ws subscribe from a point: `{"type": "subscribe", "jobId": ..., "after": N}` against a real server."""

from __future__ import annotations

import httpx

from tests.support.jobs import local_job
from tests.support.server import Server
from tests.support.streams import EventStream, ends_job, open_stream


async def pong(stream: EventStream) -> None:
    await stream.send({"type": "ping"})
    await stream.until(lambda event: event.get("type") == "pong")


async def test_subscribing_after_0_right_after_the_post_gets_every_event(server: Server, api: httpx.Client):
    stream = await open_stream(server)
    try:
        # A socket that already follows another job (the browser client that found the gap).
        await stream.send({"type": "subscribe", "jobId": "job_some_other"})
        await pong(stream)
        job = api.post("/api/v1/generate", json=local_job("a red balloon over a lake")).json()
        await stream.send({"type": "subscribe", "jobId": job["id"], "after": 0})
        await stream.until(ends_job(job["id"]))
        received = stream.of_job(job["id"])
        stored = api.get(f"/api/v1/jobs/{job['id']}/events").json()
        assert [event["seq"] for event in received] == list(range(1, len(stored) + 1))
        assert [(event["type"], event["seq"]) for event in received] == [(event["type"], event["seq"]) for event in stored]
        assert received[0]["type"] == "job_update" and received[0]["data"]["status"] == "pending"
        assert received[-1]["type"] == "job_completed"
        await pong(stream)  # nothing of the job came after its end
        assert stream.of_job(job["id"]) == received
    finally:
        await stream.connection.close()


async def test_subscribing_after_n_sends_only_the_later_events(server: Server, api: httpx.Client):
    job = api.post("/api/v1/generate", json=local_job("a lighthouse in fog")).json()
    watcher = await open_stream(server)
    try:
        await watcher.send({"type": "subscribe", "jobId": job["id"], "after": 0})
        await watcher.until(ends_job(job["id"]))
    finally:
        await watcher.connection.close()
    stored = api.get(f"/api/v1/jobs/{job['id']}/events").json()
    point = len(stored) - 3
    stream = await open_stream(server)
    try:
        await stream.send({"type": "subscribe", "jobId": job["id"], "after": point})
        await pong(stream)
        assert [event["seq"] for event in stream.of_job(job["id"])] == [point + 1, point + 2, point + 3]
        # The same again from a later point: exactly what was asked, nothing held back as "already sent".
        await stream.send({"type": "subscribe", "jobId": job["id"], "after": len(stored) - 1})
        await pong(stream)
        assert [event["seq"] for event in stream.of_job(job["id"])] == [point + 1, point + 2, point + 3, len(stored)]
    finally:
        await stream.connection.close()


async def test_a_bad_point_or_an_unknown_job_is_refused(server: Server, api: httpx.Client):
    stream = await open_stream(server)
    try:
        for after in (-1, "3", 1.5, True, 2**31):
            await stream.send({"type": "subscribe", "jobId": "job_x", "after": after})
            error = await stream.until(lambda event: event.get("type") == "error")
            assert error["code"] == "VALIDATION_ERROR" and error["details"]["field"] == "after"
        await stream.send({"type": "subscribe", "jobId": "job_nothing", "after": 0})
        error = await stream.until(lambda event: event.get("type") == "error")
        assert error["code"] == "JOB_NOT_FOUND"
        # The connection goes on; a job created now still reaches it (the refused subscribe narrowed nothing further).
        job = api.post("/api/v1/generate", json=local_job("a windmill")).json()
        await stream.send({"type": "subscribe", "jobId": job["id"], "after": 0})
        await stream.until(ends_job(job["id"]))
        assert {event.get("jobId") for event in stream.events if "jobId" in event} == {job["id"]}
    finally:
        await stream.connection.close()

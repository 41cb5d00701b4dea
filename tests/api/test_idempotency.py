"""`Idempotency-Key` on POST /api/v1/generate against real servers, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from tests.support.jobs import local_job
from tests.support.server import Server


def post(server: Server, key: str, body: dict) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        return client.post("/api/v1/generate", json=body, headers={"Idempotency-Key": key})


def concurrent_posts(servers: list[Server], key: str, body: dict, count: int) -> list[httpx.Response]:
    """`count` creates with one key, released at once, spread over `servers`."""
    start = threading.Barrier(count)
    answers: list[httpx.Response | None] = [None] * count

    def one(index: int) -> None:
        with httpx.Client(base_url=servers[index % len(servers)].url, timeout=60) as client:
            start.wait()
            answers[index] = client.post("/api/v1/generate", json=body, headers={"Idempotency-Key": key})

    threads = [threading.Thread(target=one, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def assert_one_job(answers: list[httpx.Response], api: httpx.Client) -> None:
    assert {answer.status_code for answer in answers} == {201}, [answer.json() for answer in answers]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert [answer.headers.get("Idempotent-Replayed") for answer in answers].count(None) == 1  # the one that created it
    assert api.get("/api/v1/jobs").headers["X-Total-Count"] == "1"


def test_a_replayed_create_answers_the_first_job_and_creates_nothing(server: Server, api: httpx.Client):
    body = local_job("a harbour at dawn", seed=None)
    first = post(server, "order-1", body)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    again = post(server, "order-1", {**body, "settings": dict(reversed(body["settings"].items()))})  # the same request
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["metadata"]["seed"] == first.json()["metadata"]["seed"]  # the job itself, not a new draw

    reused = post(server, "order-1", local_job("another prompt"))
    assert reused.status_code == 422
    assert reused.json()["code"] == "IDEMPOTENCY_KEY_REUSED" and reused.json()["details"]["jobId"] == first.json()["id"]
    for bad in ("k" * 256, "a\tb"):
        refused = post(server, bad, body)
        assert refused.status_code == 422 and refused.json()["details"]["field"] == "Idempotency-Key"
    other = post(server, "order-2", body)  # another key: another job
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert api.get("/api/v1/jobs").headers["X-Total-Count"] == "2"


def test_concurrent_creates_with_one_key_make_one_job_on_sqlite(server: Server, api: httpx.Client):
    answers = concurrent_posts([server], "burst", local_job("a windmill in a storm"), 8)
    assert_one_job(answers, api)


def test_concurrent_creates_with_one_key_make_one_job_across_instances_on_postgresql(tmp_path: Path, postgres_url: str):
    env = {"DATABASE_URL": postgres_url}
    first = Server(tmp_path / "first", **env).start()
    try:
        second = Server(tmp_path / "second", **env).start()
        try:
            answers = concurrent_posts([first, second], "burst", local_job("a castle on a hill"), 8)
            with second.client() as api:
                assert_one_job(answers, api)
                reused = post(first, "burst", local_job("something else"))
                assert reused.status_code == 422 and reused.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
        finally:
            second.stop()
    finally:
        first.stop()

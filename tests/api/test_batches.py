"""Batches of jobs (POST/GET/DELETE /api/v1/batches, GET /api/v1/jobs?batch=) and image-only jobs
animated later (POST /api/v1/jobs/{id}/animate), against real servers. The cancel that lands
half-way through a batch, deterministically, is in tests/system/test_batch_cancel.py."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable
from pathlib import Path

import av
import httpx
from PIL import Image

from tests.api.test_budgets_api import spend
from tests.fakes import FakeReplicate, provider_env
from tests.support.jobs import local_job
from tests.support.server import Server
from tests.support.streams import EventStream, ends_job

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdefgh"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def all_end(stream: EventStream, job_ids: Iterable[str]) -> None:
    """Read events until every one of `job_ids` has ended (completed, failed or cancelled)."""
    waiting = set(job_ids)

    def last_one(event: dict) -> bool:
        for job_id in list(waiting):
            if ends_job(job_id)(event):
                waiting.discard(job_id)
        return not waiting

    if waiting:
        await stream.until(last_one)


async def test_a_batch_of_four_variants_runs_to_completion(server: Server, api: httpx.Client, events: EventStream):
    lone = api.post("/api/v1/generate", json=local_job("not in the batch")).json()
    created = api.post("/api/v1/batches", json={**local_job("a lighthouse in a storm", seed=4294967294), "count": 4})
    assert created.status_code == 201, created.text
    batch = created.json()
    assert batch["id"].startswith("bat_") and len(batch["jobs"]) == 4
    assert batch["counts"] == {"pending": 4}
    ids = [job["id"] for job in batch["jobs"]]
    # s, s+1, ... in the order asked for, wrapping past the largest seed.
    assert [job["metadata"]["seed"] for job in batch["jobs"]] == [4294967294, 4294967295, 0, 1]
    assert {job["batch_id"] for job in batch["jobs"]} == {batch["id"]} and lone["batch_id"] is None

    await all_end(events, [*ids, lone["id"]])
    done = api.get(f"/api/v1/batches/{batch['id']}").json()
    assert done["counts"] == {"completed": 4} and [job["id"] for job in done["jobs"]] == ids
    assert all(job["video_url"] and job["cost"]["total"] == 0 for job in done["jobs"])

    listed = api.get("/api/v1/jobs", params={"batch": batch["id"]})
    assert listed.headers["X-Total-Count"] == "4" and {job["id"] for job in listed.json()} == set(ids)
    page = api.get("/api/v1/jobs", params={"batch": batch["id"], "status": "completed", "limit": 3, "offset": 3})
    assert page.headers["X-Total-Count"] == "4" and [job["id"] for job in page.json()] == [ids[0]]  # newest first
    assert api.get("/api/v1/jobs", params={"batch": "bat_none"}).json() == []
    assert api.get("/api/v1/batches/bat_none").json()["code"] == "BATCH_NOT_FOUND"


async def test_a_batch_cancels_as_one(server: Server, api: httpx.Client, events: EventStream):
    """DELETE while the first variant renders (one local render at a time): the unfinished jobs are
    cancelled, each with its end event; a second DELETE finds nothing left to cancel."""
    batch = api.post("/api/v1/batches", json={**local_job("a slow river", videoDuration=10), "count": 3}).json()
    ids = [job["id"] for job in batch["jobs"]]
    seeds = [job["metadata"]["seed"] for job in batch["jobs"]]
    assert len(set(seeds)) == 3  # no seed given: distinct random ones
    await events.until(
        lambda e: e.get("jobId") == ids[0] and e["type"] == "step_update" and e["data"]["id"] == "video_generation"
    )
    cancelled = api.delete(f"/api/v1/batches/{batch['id']}")
    assert cancelled.status_code == 200, cancelled.text
    answer = cancelled.json()
    assert answer["counts"] == {"cancelled": 3}, answer["counts"]  # the first was rendering a 10 s video: far from done
    assert [job["status"] for job in answer["jobs"]] == ["cancelled"] * 3
    await all_end(events, ids)
    again = api.delete(f"/api/v1/batches/{batch['id']}")
    assert again.status_code == 200 and again.json()["counts"] == {"cancelled": 3}
    assert api.get(f"/api/v1/batches/{batch['id']}").json() == again.json()


def test_a_list_is_all_or_nothing_and_errors_name_the_job(shared_server: Server):
    with shared_server.client() as api:
        before = api.get("/api/v1/jobs").headers["X-Total-Count"]
        good = local_job("fine")
        cases = [
            ({"jobs": [good, good, good, local_job("no such length", videoDuration=7)]}, "jobs[3].settings.videoDuration"),
            ({"jobs": [good, good, local_job("odd size", imageSize="999x999")]}, "jobs[2].settings.imageSize"),
            ({"jobs": [good, {"prompt": "   ", "provider": "local"}]}, "jobs[1].prompt"),
            ({"jobs": [good] * 51}, "jobs"),
            ({"jobs": []}, "jobs"),
            ({**good, "count": 9}, "count"),
            ({**good, "count": 1}, "count"),
            (good, "count"),
            ({**good, "count": 2, "colour": "red"}, "colour"),
            ({"jobs": [good], "count": 2}, "count"),
            ([good], "body"),
        ]
        for body, field in cases:
            answer = api.post("/api/v1/batches", json=body)
            assert answer.status_code == 422, (field, answer.text)
            assert answer.json()["code"] == "VALIDATION_ERROR" and answer.json()["details"]["field"] == field, answer.json()
        message = api.post("/api/v1/batches", json={"jobs": [good, local_job("x", imageSize="1x1")]}).json()["error"]
        assert message.startswith("jobs[1]: The image size is"), message
        assert api.get("/api/v1/jobs").headers["X-Total-Count"] == before  # nothing was created


def test_batches_are_owned_like_jobs(tmp_path: Path):
    server = Server(tmp_path / "data", API_TOKENS=f"alice:{ALICE},bob:{BOB}").start()
    try:
        with server.client() as api:
            batch = api.post("/api/v1/batches", json={**local_job("alice's"), "count": 2}, headers=bearer(ALICE)).json()
            for method in ("GET", "DELETE"):
                answer = api.request(method, f"/api/v1/batches/{batch['id']}", headers=bearer(BOB))
                assert answer.status_code == 404 and answer.json()["code"] == "BATCH_NOT_FOUND"
            assert api.get("/api/v1/jobs", params={"batch": batch["id"]}, headers=bearer(BOB)).json() == []
            assert api.get(f"/api/v1/batches/{batch['id']}").status_code == 401
            mine = api.get(f"/api/v1/batches/{batch['id']}", headers=bearer(ALICE))
            assert mine.status_code == 200 and len(mine.json()["jobs"]) == 2
            job_id = batch["jobs"][0]["id"]
            assert api.post(f"/api/v1/jobs/{job_id}/animate", headers=bearer(BOB)).json()["code"] == "JOB_NOT_FOUND"
    finally:
        server.stop()


def test_a_batch_over_the_budget_creates_nothing(tmp_path: Path):
    """Each job fits the budget; the batch's total does not: 402, and nothing is stored."""
    replicate = FakeReplicate().start()
    server = Server(
        tmp_path / "data", API_TOKENS=f"alice:{ALICE}", PROMPTREEL_BUDGETS="alice:2/day", **provider_env(replicate=replicate)
    ).start()
    try:
        with server.client() as api:
            spend(server, "alice", 1.99, "job_paid_alice")
            flux = {"prompt": "a paid picture", "provider": "flux1", "settings": {"videoProvider": "local", "videoDuration": 5}}
            refused = api.post("/api/v1/batches", json={**flux, "count": 4}, headers=bearer(ALICE))
            assert refused.status_code == 402, refused.text
            details = refused.json()["details"]
            assert refused.json()["code"] == "BUDGET_EXCEEDED" and details["estimate"] == 0.012 and details["spent"] == 1.99
            listed = api.post("/api/v1/batches", json={"jobs": [flux] * 4}, headers=bearer(ALICE))
            assert listed.status_code == 402 and listed.json()["details"]["estimate"] == 0.012
            assert api.get("/api/v1/jobs", headers=bearer(ALICE)).headers["X-Total-Count"] == "1"  # the one paid earlier
            fits = api.post("/api/v1/batches", json={**flux, "count": 3}, headers=bearer(ALICE))  # 1.99 + 0.009 <= 2
            assert fits.status_code == 201, fits.text
            api.delete(f"/api/v1/batches/{fits.json()['id']}", headers=bearer(ALICE))
    finally:
        server.stop()
        replicate.stop()


def test_a_replayed_batch_answers_the_first_one(shared_server: Server):
    with shared_server.client() as api:
        body = {"jobs": [local_job("first of two"), local_job("second of two")]}
        first = api.post("/api/v1/batches", json=body, headers={"Idempotency-Key": "batch-1"})
        assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
        before = api.get("/api/v1/jobs").headers["X-Total-Count"]
        again = api.post("/api/v1/batches", json=body, headers={"Idempotency-Key": "batch-1"})
        assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        assert [job["id"] for job in again.json()["jobs"]] == [job["id"] for job in first.json()["jobs"]]
        assert api.get("/api/v1/jobs").headers["X-Total-Count"] == before
        reused = api.post(
            "/api/v1/batches", json={**local_job("first of two"), "count": 2}, headers={"Idempotency-Key": "batch-1"}
        )
        assert reused.status_code == 422 and reused.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
        api.delete(f"/api/v1/batches/{first.json()['id']}")


async def test_image_only_variants_and_one_animated(server: Server, api: httpx.Client, events: EventStream):
    """Images first: the jobs stop after the image (image cost only); "animate this one" makes a new
    job in the same batch whose image step takes that image at no cost, and whose MP4 decodes."""
    batch = api.post("/api/v1/batches", json={**local_job("a fox in the snow", seed=21, imageOnly=True), "count": 2}).json()
    ids = [job["id"] for job in batch["jobs"]]
    assert [step["id"] for step in batch["jobs"][0]["steps"]] == ["image_generation"]
    await all_end(events, ids)
    chosen = api.get(f"/api/v1/jobs/{ids[1]}").json()
    assert chosen["status"] == "completed" and chosen["video_url"] is None and chosen["image_url"]
    assert chosen["metadata"]["imageOnly"] is True and chosen["progress"] == 100
    assert api.get(f"/api/v1/jobs/{ids[1]}/download/video").json()["code"] == "MEDIA_NOT_READY"

    animated = api.post(
        f"/api/v1/jobs/{ids[1]}/animate", json={"prompt": "the fox turns its head", "settings": {"videoDuration": 5}}
    )
    assert animated.status_code == 201, animated.text
    job = animated.json()
    assert job["id"] not in ids and job["batch_id"] == batch["id"] and job["prompt"] == "the fox turns its head"
    assert job["metadata"]["sourceJob"] == ids[1] and job["metadata"]["seed"] == 22
    await all_end(events, [job["id"]])
    done = api.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["status"] == "completed" and done["cost"] == {"imageGeneration": 0.0, "videoGeneration": 0.0, "total": 0.0}
    image_log = done["steps"][0]["log"]
    assert any(f"the image of job {ids[1]}" in line and "no cost" in line for line in image_log), image_log
    picture = Image.open(io.BytesIO(api.get(done["image_url"]).content))
    original = Image.open(io.BytesIO(api.get(chosen["image_url"]).content))
    assert picture.size == original.size and picture.tobytes() == original.tobytes()  # the very image, taken as it is
    with av.open(io.BytesIO(api.get(done["video_url"]).content)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and sum(1 for _ in container.decode(stream)) == 5 * 24
    assert api.get(f"/api/v1/jobs/{ids[1]}").json() == chosen  # finished is final: the image-only job is as it was
    assert api.get(f"/api/v1/batches/{batch['id']}").json()["counts"] == {"completed": 3}

    refused = api.post(f"/api/v1/jobs/{job['id']}/animate")  # it has its video already
    assert refused.status_code == 409 and refused.json()["code"] == "JOB_NOT_ANIMATABLE"
    bad = api.post(f"/api/v1/jobs/{ids[0]}/animate", json={"settings": {"videoDuration": 7}})
    assert bad.status_code == 422 and bad.json()["details"]["field"] == "settings.videoDuration"
    unknown = api.post(f"/api/v1/jobs/{ids[0]}/animate", json={"settings": {"imageSize": "1024x1024"}})
    assert unknown.status_code == 422 and unknown.json()["details"]["field"] == "settings.imageSize"
    assert api.post("/api/v1/jobs/job_nothing/animate").json()["code"] == "JOB_NOT_FOUND"
    nothing_said = api.post(f"/api/v1/jobs/{job['id']}/animate", json={"prompt": None, "webhook": None})
    assert nothing_said.status_code == 409, nothing_said.text  # null is "left out" (a 500 before)


def concurrent_batches(servers: list[Server], key: str, body: dict, count: int) -> list[httpx.Response]:
    """`count` batch creates with one key, released at once, spread over `servers`."""
    start = threading.Barrier(count)
    answers: list[httpx.Response] = []

    def one(index: int) -> None:
        with httpx.Client(base_url=servers[index % len(servers)].url, timeout=60) as client:
            start.wait()
            answers.append(client.post("/api/v1/batches", json=body, headers={"Idempotency-Key": key}))

    threads = [threading.Thread(target=one, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def assert_one_batch(answers: list[httpx.Response], api: httpx.Client, jobs: int) -> None:
    assert {answer.status_code for answer in answers} == {201}, [answer.json() for answer in answers]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert [answer.headers.get("Idempotent-Replayed") for answer in answers].count(None) == 1  # the one that made it
    assert api.get("/api/v1/jobs").headers["X-Total-Count"] == str(jobs)


def test_concurrent_batches_with_one_key_make_one_batch_on_sqlite(server: Server, api: httpx.Client):
    answers = concurrent_batches([server], "burst", {**local_job("a windmill in a storm"), "count": 3}, 6)
    assert_one_batch(answers, api, 3)
    api.delete(f"/api/v1/batches/{answers[0].json()['id']}")


def test_concurrent_batches_with_one_key_make_one_batch_across_instances_on_postgresql(tmp_path: Path, postgres_url: str):
    first = Server(tmp_path / "first", DATABASE_URL=postgres_url).start()
    try:
        second = Server(tmp_path / "second", DATABASE_URL=postgres_url).start()
        try:
            body = {"jobs": [local_job("a castle on a hill"), local_job("a castle at night")]}
            answers = concurrent_batches([first, second], "burst", body, 6)
            with second.client() as api:
                assert_one_batch(answers, api, 2)
                assert api.delete(f"/api/v1/batches/{answers[0].json()['id']}").status_code == 200
        finally:
            second.stop()
    finally:
        first.stop()


def test_the_queue_and_rate_limits_count_the_whole_batch(tmp_path: Path):
    server = Server(tmp_path / "data", PROMPTREEL_MAX_QUEUED_JOBS="5", PROMPTREEL_RATE_LIMIT_PER_MINUTE="4").start()
    try:
        with server.client() as api:
            body = local_job("a queue of kites")
            # More jobs than the minute allows never fit: 422 naming the field, not a 429 to wait out.
            for never, field in (({"jobs": [body] * 5}, "jobs"), ({**body, "count": 5}, "count")):
                answer = api.post("/api/v1/batches", json=never)
                assert answer.status_code == 422 and answer.json()["details"]["field"] == field, answer.text
                assert "rate limit of 4 jobs a minute" in answer.json()["error"]
            fits = api.post("/api/v1/batches", json={**body, "count": 3})
            assert fits.status_code == 201, fits.text
            full = api.post("/api/v1/batches", json={"jobs": [body] * 3})  # 3 + 3 queued > 5
            assert full.status_code == 503 and full.json()["code"] == "QUEUE_FULL"
            limited = api.post("/api/v1/batches", json={**body, "count": 2})  # fits the queue, not the minute (3 + 2 > 4)
            assert limited.status_code == 429 and limited.json()["code"] == "RATE_LIMITED" and limited.headers["Retry-After"]
            assert api.get("/api/v1/jobs").headers["X-Total-Count"] == "3"
            assert api.post("/api/v1/generate", json=body).status_code == 201  # the 4th of the minute
            assert api.post("/api/v1/generate", json=body).json()["code"] == "RATE_LIMITED"
            api.delete(f"/api/v1/batches/{fits.json()['id']}")
            malformed = api.get("/api/v1/jobs", params={"batch": "bat_\x00"})  # never reaches the database
            assert malformed.status_code == 422 and malformed.json()["details"]["field"] == "batch", malformed.text
    finally:
        server.stop()


def test_a_lists_webhook_goes_to_every_job_that_names_none(tmp_path: Path, shared_server: Server):
    server = Server(tmp_path / "data", PROMPTREEL_WEBHOOK_ALLOW_PRIVATE="true").start()
    try:
        with server.client() as api:
            own = {**local_job("its own hook"), "webhook": "http://127.0.0.1:9/own", "webhookEvents": ["started"]}
            body = {"jobs": [local_job("the shared hook"), own], "webhook": "http://127.0.0.1:9/shared"}
            batch = api.post("/api/v1/batches", json=body)
            assert batch.status_code == 201, batch.text
            first, second = (api.get(f"/api/v1/jobs/{job['id']}/webhooks").json() for job in batch.json()["jobs"])
            assert (first["webhook"], first["events"]) == ("http://127.0.0.1:9/shared", ["completed", "failed", "cancelled"])
            assert (second["webhook"], second["events"]) == ("http://127.0.0.1:9/own", ["started"])
            api.delete(f"/api/v1/batches/{batch.json()['id']}")
    finally:
        server.stop()
    with shared_server.client() as api:  # private addresses refused: the field is the one that named it
        shared = api.post("/api/v1/batches", json={"jobs": [local_job("a")], "webhook": "http://127.0.0.1:9/x"}).json()
        assert (shared["code"], shared["details"]["field"]) == ("WEBHOOK_URL_REFUSED", "webhook")
        per_job = {"jobs": [local_job("a"), {**local_job("b"), "webhook": "http://10.0.0.1/x"}]}
        refused = api.post("/api/v1/batches", json=per_job).json()
        assert (refused["code"], refused["details"]["field"]) == ("WEBHOOK_URL_REFUSED", "jobs[1].webhook")

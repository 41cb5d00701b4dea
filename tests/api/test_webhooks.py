"""Signed webhooks against a real server and a real receiver on loopback (private targets allowed
for these servers): a delivery verified with the `standardwebhooks` package, retries with one
`webhook-id`, redirects not followed, and the addresses refused when a job is created."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.support.jobs import local_job, unsigned
from tests.support.server import Server
from tests.support.webhook_receiver import receiving

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(scope="module")
def hook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("webhooks") / "data",
        PROMPTREEL_WEBHOOK_ALLOW_PRIVATE="true",
        PROMPTREEL_WEBHOOK_SECRET=SECRET,
        PROMPTREEL_WEBHOOK_RETRY_BASE_SECONDS="0.05",
    ).start()
    yield srv
    srv.stop()


def wait_state(client: httpx.Client, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 120) -> dict[str, Any]:
    """GET /webhooks until `done` says so (the server's own state, polled: there is no event for it)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(f"/api/v1/jobs/{job_id}/webhooks")
        assert answer.status_code == 200, answer.text
        if done(answer.json()):
            return answer.json()
        assert time.monotonic() < deadline, answer.json()
        time.sleep(0.05)


def test_completed_is_delivered_once_signed_with_the_job_as_get_answers_it(hook_server: Server):
    with receiving() as receiver, hook_server.client() as client:
        created = client.post("/api/v1/generate", json={**local_job(), "webhook": receiver.url})
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        [request] = receiver.wait_for(1)
        payload = Webhook(SECRET).verify(request.body, request.headers)
        assert payload["type"] == "completed" and payload["jobId"] == job_id
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        assert unsigned(payload["data"]) == unsigned(job)
        assert request.headers["webhook-signature"].startswith("v1,")
        assert request.headers["webhook-id"] == f"msg_{job_id}_{_seq(client, job_id)}"
        state = wait_state(client, job_id, lambda body: body["deliveries"][0]["status"] == "delivered")
        [delivery] = state["deliveries"]
        assert state["webhook"] == receiver.url and state["events"] == ["completed", "failed", "cancelled"]
        assert delivery["attempts"] == 1 and delivery["lastStatusCode"] == 200 and delivery["nextAttemptAt"] is None

        # A second job, which also asks for `started`: both of its events arrive, the first job's completed no more.
        second = client.post(
            "/api/v1/generate", json={**local_job(), "webhook": receiver.url, "webhookEvents": ["started", "completed"]}
        ).json()
        received = receiver.wait_for(3)
        assert [json.loads(r.body)["type"] for r in received[1:]] == ["started", "completed"]
        assert {json.loads(r.body)["jobId"] for r in received[1:]} == {second["id"]}
        assert [json.loads(r.body)["jobId"] for r in received].count(job_id) == 1


def _seq(client: httpx.Client, job_id: str) -> int:
    """The number of the job's stored `job_completed` event."""
    events = client.get(f"/api/v1/jobs/{job_id}/events").json()
    return next(event["seq"] for event in events if event["type"] == "job_completed")


def test_a_receiver_that_fails_twice_gets_the_same_delivery_until_it_answers_2xx(hook_server: Server):
    with receiving((500, 500, 200)) as receiver, hook_server.client() as client:
        job_id = client.post("/api/v1/generate", json={**local_job(), "webhook": receiver.url}).json()["id"]
        received = receiver.wait_for(3)
        assert len({r.headers["webhook-id"] for r in received}) == 1
        for request in received:
            assert Webhook(SECRET).verify(request.body, request.headers)["type"] == "completed"
        state = wait_state(client, job_id, lambda body: body["deliveries"][0]["status"] == "delivered")
        [delivery] = state["deliveries"]
        assert [attempt["statusCode"] for attempt in delivery["history"]] == [500, 500, 200]
        assert delivery["attempts"] == 3 and delivery["lastError"] is None


def test_a_redirect_is_not_followed(hook_server: Server):
    with receiving() as elsewhere, receiving((302,), location=elsewhere.url) as receiver, hook_server.client() as client:
        job_id = client.post("/api/v1/generate", json={**local_job(), "webhook": receiver.url}).json()["id"]
        receiver.wait_for(2)  # retried: a 3xx is no 2xx
        state = wait_state(client, job_id, lambda body: bool(body["deliveries"]) and body["deliveries"][0]["attempts"] >= 2)
        assert state["deliveries"][0]["status"] == "pending"
        assert state["deliveries"][0]["lastStatusCode"] == 302
        assert "redirects are not followed" in state["deliveries"][0]["lastError"]
        assert elsewhere.received == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:9/hook",  # a name that resolves to loopback
        "https://[::1]/hook",
        "http://10.0.0.7/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "ftp://example.com/hook",
        "file:///etc/passwd",
    ],
)
def test_private_and_non_http_webhooks_are_refused_and_create_nothing(shared_server: Server, url: str):
    with shared_server.client() as client:
        before = client.get("/api/v1/jobs").headers["X-Total-Count"]
        answer = client.post("/api/v1/generate", json={**local_job(), "webhook": url})
        assert answer.status_code == 422, answer.text
        assert answer.json()["details"]["field"] == "webhook" or "webhook" in json.dumps(answer.json()["details"])
        assert answer.json()["code"] in ("WEBHOOK_URL_REFUSED", "VALIDATION_ERROR")
        assert client.get("/api/v1/jobs").headers["X-Total-Count"] == before


def test_unknown_webhook_events_or_events_without_a_webhook_are_refused(shared_server: Server):
    with shared_server.client() as client:
        alone = client.post("/api/v1/generate", json={**local_job(), "webhookEvents": ["completed"]})
        assert alone.status_code == 422 and alone.json()["error"] == "webhookEvents: Value error, is given without a webhook"
        answer = client.post(
            "/api/v1/generate", json={**local_job(), "webhook": "https://example.com/h", "webhookEvents": ["done"]}
        )
        assert answer.status_code == 422 and answer.json()["code"] == "VALIDATION_ERROR"


def test_the_deliveries_of_someone_elses_job_answer_404(tmp_path: Path):
    alice, bob = "alice-token-0123456789", "bob-token-0123456789ab"
    srv = Server(tmp_path / "data", API_TOKENS=f"alice:{alice},bob:{bob}").start()
    try:
        with srv.client() as client:
            job_id = client.post("/api/v1/generate", json=local_job(), headers={"Authorization": f"Bearer {alice}"}).json()["id"]
            mine = client.get(f"/api/v1/jobs/{job_id}/webhooks", headers={"Authorization": f"Bearer {alice}"})
            assert mine.status_code == 200 and mine.json() == {"webhook": None, "events": [], "deliveries": []}
            theirs = client.get(f"/api/v1/jobs/{job_id}/webhooks", headers={"Authorization": f"Bearer {bob}"})
            assert theirs.status_code == 404 and theirs.json()["code"] == "JOB_NOT_FOUND"
    finally:
        srv.stop()

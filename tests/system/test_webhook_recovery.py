"""A webhook survives the service's death: the job ends while its receiver is down, the server is
killed (SIGKILL) before any delivery got through, and the restarted server delivers `completed`
exactly once, with the `webhook-id` of the attempts before and a valid signature."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks import Webhook

from tests.support.jobs import local_job
from tests.support.server import Server, free_port
from tests.support.webhook_receiver import receiving

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def wait_state(client: httpx.Client, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 120) -> dict[str, Any]:
    """GET /webhooks until `done` says so (the server's own state, polled: there is no event for it)."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/v1/jobs/{job_id}/webhooks").json()
        if done(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_a_delivery_pending_at_a_crash_is_sent_once_after_the_restart(tmp_path: Path):
    env = {
        "PROMPTREEL_WEBHOOK_ALLOW_PRIVATE": "true",
        "PROMPTREEL_WEBHOOK_SECRET": SECRET,
        "PROMPTREEL_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    }
    receiver_port = free_port()  # nothing listens there yet: every attempt is refused
    url = f"http://127.0.0.1:{receiver_port}/hook"
    server = Server(tmp_path / "data", **env).start()
    try:
        with server.client() as client:
            job_id = client.post("/api/v1/generate", json={**local_job(), "webhook": url}).json()["id"]
            before = wait_state(client, job_id, lambda body: bool(body["deliveries"]) and body["deliveries"][0]["attempts"] >= 2)
            assert before["deliveries"][0]["status"] == "pending"
            assert before["deliveries"][0]["lastError"].startswith("could not connect")
            assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "completed"
        server.stop(signal.SIGKILL)

        with receiving(port=receiver_port) as receiver:
            restarted = Server(tmp_path / "data", port=server.port, **env).start()
            try:
                with restarted.client() as client:
                    [request] = receiver.wait_for(1)
                    payload = Webhook(SECRET).verify(request.body, request.headers)
                    assert payload["type"] == "completed" and payload["jobId"] == job_id
                    assert payload["data"]["status"] == "completed"
                    assert request.headers["webhook-id"] == before["deliveries"][0]["id"]
                    after = wait_state(client, job_id, lambda body: body["deliveries"][0]["status"] == "delivered")
                    [delivery] = after["deliveries"]
                    assert delivery["attempts"] > before["deliveries"][0]["attempts"]
                    assert delivery["history"][-1]["statusCode"] == 200
                    assert all(attempt["statusCode"] is None for attempt in delivery["history"][:-1])
                    assert len(receiver.received) == 1
            finally:
                restarted.stop()
    finally:
        server.stop(signal.SIGKILL)

"""The webhook pieces in-process: which URLs are refused (after DNS), which events a webhook hears,
the backoff, the secret, and the outbox on real SQLite and PostgreSQL databases with two
processes' outboxes racing to derive and to send (each delivery made once and sent once)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from standardwebhooks import Webhook

from backend.events.log import EventLog
from backend.settings import Settings
from backend.store.database import create_db_engine, migrate
from backend.store.jobs import JobStore
from backend.store.models import Job, JobEvent, JobStatus, JobWebhook
from backend.webhooks.outbox import MAX_RETRY_DELAY, WebhookOutbox, may_deliver, retry_delay, webhook_type
from backend.webhooks.signing import load_webhook_secret
from backend.webhooks.urls import WebhookUrlRefused, pin_webhook
from tests.support import postgres
from tests.support.webhook_receiver import receiving

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ALL_EVENTS = ["started", "progress", "completed", "failed", "cancelled"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/h",
        "http://localhost:8080/h",  # a name that resolves to loopback
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00::1]/h",
        "http://[::ffff:10.0.0.1]/h",
        "http://192.168.1.1/h",
        "ftp://example.com/h",
        "http:///h",
    ],
)
async def test_private_or_non_http_urls_are_refused(url: str):
    with pytest.raises(WebhookUrlRefused) as refused:
        await pin_webhook(url, allow_private=False)
    assert refused.value.status_code == 422 and refused.value.details == {"field": "webhook"}


async def test_public_addresses_pass_and_are_pinned_and_private_ones_pass_when_allowed():
    [pinned] = await pin_webhook("https://93.184.215.14:8443/hook?x=1", allow_private=False)
    assert str(pinned.url) == "https://93.184.215.14:8443/hook?x=1" and pinned.extensions == {"sni_hostname": "93.184.215.14"}
    pinned_local = await pin_webhook("http://localhost:9/hook", allow_private=True)
    assert {request.url.host for request in pinned_local} <= {"127.0.0.1", "::1"}
    assert all(request.headers == {"Host": "localhost:9"} for request in pinned_local)


def test_the_backoff_doubles_with_jitter_up_to_an_hour():
    for attempt, full in ((1, 10.0), (2, 20.0), (5, 160.0)):
        delays = {retry_delay(attempt, 10.0) for _ in range(50)}
        assert all(full / 2 <= delay <= full for delay in delays) and len(delays) > 1
    assert retry_delay(40, 10.0) <= MAX_RETRY_DELAY


def test_the_secret_is_made_once_and_kept(tmp_path: Path):
    settings = Settings(PROMPTREEL_DATA_DIR=tmp_path)
    made = load_webhook_secret(settings)
    assert made.startswith("whsec_") and made == load_webhook_secret(settings)
    assert len(Webhook(made)._whsecret) == 32
    assert (tmp_path / "webhook_secret").stat().st_mode & 0o077 == 0
    assert load_webhook_secret(Settings(PROMPTREEL_DATA_DIR=tmp_path, PROMPTREEL_WEBHOOK_SECRET=SECRET)) == SECRET
    with pytest.raises(ValueError, match="whsec_"):
        load_webhook_secret(Settings(PROMPTREEL_DATA_DIR=tmp_path, PROMPTREEL_WEBHOOK_SECRET="whsec_not base64!"))


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = create_db_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
        migrate(engine)
        yield engine
        engine.dispose()
        return
    with postgres.new_database() as url:
        engine = create_db_engine(url)
        migrate(engine)
        yield engine
        engine.dispose()


def make_job(store: JobStore, job_id: str, url: str, events: list[str]) -> None:
    job = Job(
        id=job_id,
        prompt="a lighthouse",
        provider="local",
        video_provider="local",
        status=JobStatus.PENDING.value,
        image_size="1024x1024",
        video_duration=5,
        quality="standard",
        seed=7,
    )
    with store.transaction() as connection:
        store.create(job, connection=connection)
        WebhookOutbox.subscribe(connection, job_id, url, events)


def update(status: str, progress: int) -> tuple[str, dict[str, Any]]:
    return ("job_update", {"id": "x", "status": status, "progress": progress})


def outbox(engine: Engine) -> WebhookOutbox:
    return WebhookOutbox(engine, SECRET, lambda job_id: {"id": job_id, "status": "as GET answers it"}, allow_private=True)


CLUSTER = {
    "PROMPTREEL_TASK_ENGINE": "procrastinate",
    "DATABASE_URL": "postgresql+psycopg://promptreel@localhost/promptreel",
    "PROMPTREEL_SECRET_KEY": "cluster-signing-key",
    "PROMPTREEL_STORAGE_SECRET": "cluster-storage-secret",
    "PROMPTREEL_WEBHOOK_SECRET": SECRET,
}


@pytest.mark.parametrize("missing", ["PROMPTREEL_SECRET_KEY", "PROMPTREEL_STORAGE_SECRET", "PROMPTREEL_WEBHOOK_SECRET"])
def test_a_cluster_refuses_to_start_without_each_shared_secret(tmp_path: Path, missing: str):
    # Deliveries go out from whichever process is alive: a secret kept per data dir would sign differently per host.
    Settings(PROMPTREEL_DATA_DIR=tmp_path, **CLUSTER)  # all three set: it starts
    with pytest.raises(ValueError, match=f"a cluster needs {missing}"):
        Settings(PROMPTREEL_DATA_DIR=tmp_path, **{name: value for name, value in CLUSTER.items() if name != missing})


BUS_EVENTS = [
    *(("job_update", {"id": "job_x", "status": status.value, "progress": 0}) for status in JobStatus),
    ("step_update", {"id": "image_generation", "status": "running"}),
    ("job_completed", {"id": "job_x", "status": "completed"}),
    ("job_failed", {"id": "job_x", "status": "failed", "error": "boom"}),
    ("job_removed", {"id": "job_x"}),
]


@pytest.mark.parametrize(("kind", "data"), BUS_EVENTS)
async def test_the_outbox_wakes_for_every_event_a_webhook_hears_and_only_those(kind: str, data: dict[str, Any]):
    """The outbox skips its round (three queries) for events no webhook hears: a subscriber to
    every event, fresh, must hear each event that wakes it, and none that does not."""
    subscription = JobWebhook(job_id="job_x", url="http://127.0.0.1:9/h", events=ALL_EVENTS)
    heard = webhook_type(JobEvent(job_id="job_x", seq=1, type=kind, data=data), subscription)
    box = outbox(create_db_engine("sqlite://"))
    box.wake({"type": kind, "jobId": "job_x", "data": data})
    assert box._wake.is_set() is may_deliver({"type": kind, "data": data}) is (heard is not None)
    box._wake.clear()
    box.wake()  # called without an event (a retry coming due): always a round
    assert box._wake.is_set()


def test_events_become_the_deliveries_asked_for_once_whoever_derives(engine: Engine):
    store, log = JobStore(engine), EventLog(engine)
    make_job(store, "job_all", "http://127.0.0.1:9/h", ALL_EVENTS)
    make_job(store, "job_default", "http://127.0.0.1:9/h", ["completed", "failed", "cancelled"])
    for job_id in ("job_all", "job_default"):
        log.append(job_id, [update("pending", 0)])
        log.append(job_id, [update("generating_image", 0), ("step_update", {"id": "image_generation"})])
        log.append(job_id, [update("generating_image", 10)])  # progress
        log.append(job_id, [update("generating_image", 20)])  # within 2 s of the last progress: not sent
        log.append(job_id, [update("completed", 100), ("job_completed", {"id": job_id})])
    outboxes = [outbox(engine) for _ in range(4)]
    made: list[int] = []
    threads = [threading.Thread(target=lambda o=o: made.append(o.derive())) for o in outboxes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(made) == 4
    every = outboxes[0].deliveries("job_all")["deliveries"]
    assert [d["type"] for d in every] == ["started", "progress", "completed"]
    assert [d["type"] for d in outboxes[0].deliveries("job_default")["deliveries"]] == ["completed"]
    assert outboxes[0].derive() == 0  # nothing new

    log.append("job_all", [("job_failed", {"id": "job_all"})])  # a later event is derived once too
    assert outboxes[1].derive() == 1


async def test_two_senders_send_each_delivery_once_and_a_2xx_is_final(engine: Engine):
    store, log = JobStore(engine), EventLog(engine)
    with receiving() as receiver:
        for index in range(6):
            make_job(store, f"job_{index}", receiver.url, ["completed"])
            log.append(f"job_{index}", [("job_completed", {"id": f"job_{index}"})])
        first, second = outbox(engine), outbox(engine)
        first.derive()
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
            sent = await asyncio.gather(first.send_due(client), second.send_due(client))
            assert sum(sent) == 6
            received = receiver.wait_for(6)
            assert sorted(r.headers["webhook-id"] for r in received) == sorted(f"msg_job_{i}_1" for i in range(6))
            for request in received:
                body = Webhook(SECRET).verify(request.body, request.headers)
                assert body == {
                    "type": "completed",
                    "jobId": body["jobId"],
                    "data": {"id": body["jobId"], "status": "as GET answers it"},
                }
            assert await first.send_due(client) + await second.send_due(client) == 0
        assert len(receiver.received) == 6
        states = {d["status"] for i in range(6) for d in first.deliveries(f"job_{i}")["deliveries"]}
        assert states == {"delivered"}


async def test_a_failed_attempt_is_retried_later_and_given_up_after_the_retry_window(engine: Engine):
    store, log = JobStore(engine), EventLog(engine)
    with receiving((503,)) as receiver:
        make_job(store, "job_down", receiver.url, ["completed"])
        log.append("job_down", [("job_completed", {"id": "job_down"})])
        box = outbox(engine)
        box.retry_base_seconds = 3600.0
        box.derive()
        async with httpx.AsyncClient() as client:
            assert await box.send_due(client) == 1
            assert await box.send_due(client) == 0  # not due before its backoff
            [delivery] = box.deliveries("job_down")["deliveries"]
            assert delivery["status"] == "pending" and delivery["lastStatusCode"] == 503 and delivery["nextAttemptAt"]
            box.retry_hours = 1e-9  # the window has passed: the next failure gives up
            with engine.begin() as connection:
                connection.exec_driver_sql("UPDATE webhook_deliveries SET next_attempt_at = created_at")
            assert await box.send_due(client) == 1
        [delivery] = box.deliveries("job_down")["deliveries"]
        assert delivery["status"] == "failed" and delivery["attempts"] == 2 and delivery["nextAttemptAt"] is None
        assert json.loads(receiver.received[0].body)["type"] == "completed"


async def test_the_address_is_checked_again_at_each_attempt(engine: Engine):
    """A webhook stored while private targets were allowed (or whose name now resolves to one) is
    refused at delivery time: nothing is sent, the attempt says why and is retried later."""
    store, log = JobStore(engine), EventLog(engine)
    with receiving() as receiver:
        make_job(store, "job_private", receiver.url, ["completed"])
        log.append("job_private", [("job_completed", {"id": "job_private"})])
        box = outbox(engine)
        box.allow_private = False
        box.derive()
        async with httpx.AsyncClient() as client:
            assert await box.send_due(client) == 1
        [delivery] = box.deliveries("job_private")["deliveries"]
        assert delivery["status"] == "pending" and delivery["lastStatusCode"] is None
        assert delivery["lastError"] == "refused: resolves to a loopback, private, link-local or metadata address"
        assert receiver.received == []


def test_the_cli_prints_the_secret_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    from app.cli import main

    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setenv("PROMPTREEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("PROMPTREEL_WEBHOOK_SECRET", raising=False)
    assert main(["webhook-secret"]) == 0
    made = capsys.readouterr().out.strip()
    assert made.startswith("whsec_") and made == load_webhook_secret(Settings(PROMPTREEL_DATA_DIR=tmp_path / "data"))
    monkeypatch.setenv("PROMPTREEL_WEBHOOK_SECRET", SECRET)
    assert main(["webhook-secret"]) == 0
    assert capsys.readouterr().out.strip() == SECRET

"""The webhook outbox: a job's stored events turned into deliveries, sent until a 2xx.

Durable end to end. A job's subscription (`job_webhooks`) is written with the job; its `cursor`
is the last stored event looked at. Whichever serving process is alive turns the events after it
into `webhook_deliveries` rows and moves the cursor in one transaction, claimed by a conditional
UPDATE of the cursor (two processes never derive one event twice; the delivery's id, its
`webhook-id`, is its primary key besides). A delivery is sent by the process that leases it (a
conditional UPDATE again: one sender at a time, on SQLite and PostgreSQL alike); the lease outlasts
the 10 s an attempt may take, so a process that dies mid-attempt leaves it to another afterwards.
A 2xx marks it delivered in the same UPDATE that ends the lease, and only pending rows are
leased: nothing is sent again after a 2xx. Anything else is retried with exponential backoff and
jitter until PROMPTREEL_WEBHOOK_RETRY_HOURS after the event, then given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
from sqlalchemy import Connection, Engine, Result, and_, insert, or_, update
from sqlalchemy.engine import CursorResult
from sqlmodel import Session, col, select

from backend.jobs.public import iso
from backend.providers.output_urls import PinnedRequest
from backend.store.models import Job, JobEvent, JobWebhook, WebhookDelivery, utcnow
from backend.webhooks.signing import signed_headers
from backend.webhooks.urls import WebhookUrlRefused, pin_webhook

log = logging.getLogger(__name__)

#: A 2xx must come within this (s); else the attempt failed.
ATTEMPT_SECONDS = 10.0
#: A sender's lease on a delivery: longer than an attempt, so no two processes send one at once.
LEASE_SECONDS = 60.0
#: The longest wait between two attempts (s).
MAX_RETRY_DELAY = 3600.0
#: `progress` at most this often per job (s).
PROGRESS_EVERY = 2.0
#: When nothing wakes the loop (another instance's job, a retry coming due), it looks this often (s).
IDLE_POLL = 1.0
#: Deliveries sent at once by one process.
BATCH = 20
RUNNING = ("generating_image", "generating_video")


def delivery_id(job_id: str, seq: int) -> str:
    """The `webhook-id` of one event of a job: the same on every attempt, and the row's key."""
    return f"msg_{job_id}_{seq}"


def retry_delay(attempt: int, base: float) -> float:
    """Exponential backoff with jitter: between half and all of base * 2^(attempt-1), capped."""
    delay = min(base * 2 ** min(attempt - 1, 30), MAX_RETRY_DELAY)
    return random.uniform(delay / 2, delay)


def webhook_type(event: JobEvent, subscription: JobWebhook) -> str | None:
    """What a webhook hears of one stored event, if anything; updates the subscription's memory of
    `started` and the last `progress`."""
    if event.type == "job_completed":
        return "completed"
    if event.type == "job_failed":
        return "failed"
    if event.type != "job_update":
        return None
    status = event.data.get("status")
    if status == "cancelled":
        return "cancelled"
    if status not in RUNNING:
        return None
    if not subscription.started_sent:
        subscription.started_sent = True
        return "started"
    last = subscription.last_progress_at
    if last is not None and event.created_at - last < timedelta(seconds=PROGRESS_EVERY):
        return None
    if "progress" in subscription.events:
        subscription.last_progress_at = event.created_at
    return "progress"


def may_deliver(event: Mapping[str, Any]) -> bool:
    """Whether a bus event (`{"type", "jobId", "data"}`) can be one a webhook hears (`webhook_type`):
    only those wake the outbox. A job's others (created, pending, a step's update) make no delivery:
    the next round moves the cursor past them all the same."""
    if event.get("type") in ("job_completed", "job_failed"):
        return True
    return event.get("type") == "job_update" and event.get("data", {}).get("status") in (*RUNNING, "cancelled")


def delivery_data(delivery: WebhookDelivery) -> dict[str, Any]:
    """A delivery as `GET /api/v1/jobs/{id}/webhooks` shows it."""
    last = delivery.history[-1] if delivery.history else {}
    return {
        "id": delivery.id,
        "type": delivery.type,
        "status": delivery.state,
        "createdAt": iso(delivery.created_at),
        "attempts": delivery.attempts,
        "lastAttemptAt": last.get("at"),
        "lastStatusCode": last.get("statusCode"),
        "lastError": last.get("error"),
        "nextAttemptAt": iso(delivery.next_attempt_at) if delivery.state == "pending" else None,
        "history": delivery.history,
    }


def _changed(result: Result[Any]) -> int:
    """The rows an UPDATE changed (Session.execute is typed as Result; an UPDATE's is a CursorResult)."""
    return cast(CursorResult[Any], result).rowcount


class WebhookOutbox:
    """`present(job_id)`: the job object as GET answers it (None once the job is gone)."""

    def __init__(
        self,
        engine: Engine,
        secret: str,
        present: Callable[[str], dict[str, Any] | None],
        *,
        allow_private: bool = False,
        retry_base_seconds: float = 10.0,
        retry_hours: float = 24.0,
    ):
        self.engine = engine
        self.secret = secret
        self.present = present
        self.allow_private = allow_private
        self.retry_base_seconds = retry_base_seconds
        self.retry_hours = retry_hours
        self.owner = "wh_" + secrets.token_hex(6)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- subscribing (with the job, in its transaction) -------------------------------------

    async def check_url(self, url: str) -> None:
        """WebhookUrlRefused (422) unless `url` may be called (resolved now; checked again per attempt)."""
        await pin_webhook(url, allow_private=self.allow_private)

    @staticmethod
    def subscribe(connection: Connection, job_id: str, url: str, events: list[str]) -> None:
        """Store the job's webhook in the transaction that creates the job (JobService.create)."""
        connection.execute(insert(JobWebhook).values(job_id=job_id, url=url, events=events, cursor=0, started_sent=False))

    def deliveries(self, job_id: str) -> dict[str, Any]:
        with Session(self.engine) as session:
            subscription = session.get(JobWebhook, job_id)
            rows = session.exec(
                select(WebhookDelivery).where(col(WebhookDelivery.job_id) == job_id).order_by(col(WebhookDelivery.seq))
            ).all()
        return {
            "webhook": subscription.url if subscription else None,
            "events": subscription.events if subscription else [],
            "deliveries": [delivery_data(row) for row in rows],
        }

    # -- running ---------------------------------------------------------------------------

    def wake(self, event: Mapping[str, Any] | None = None) -> None:
        """Look now (a bus listener: a job's event was stored). Not for an event no webhook hears:
        a round is three queries, and every job's creation would pay them (bench/api.py)."""
        if event is None or may_deliver(event):
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=ATTEMPT_SECONDS) as client:
            while True:
                self._wake.clear()
                try:
                    self.derive()
                    await self.send_due(client)
                except Exception:  # the store may be down for a moment: the rows wait, try again
                    log.exception("webhook outbox round failed")
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that lands
                # as the event is set (the loop then never stopped: seen in test_cancel_race).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._idle_wait()):  # a clock: retries come due
                        await self._wake.wait()

    def _idle_wait(self) -> float:
        with Session(self.engine) as session:
            due = session.exec(
                select(WebhookDelivery.next_attempt_at)
                .where(col(WebhookDelivery.state) == "pending")
                .order_by(col(WebhookDelivery.next_attempt_at))
                .limit(1)
            ).first()
        if due is None:
            return IDLE_POLL
        return min(max((due - utcnow()).total_seconds(), 0.01), IDLE_POLL)

    def derive(self) -> int:
        """Turn the stored events no process has looked at into deliveries; how many were made."""
        with Session(self.engine) as session:
            behind = session.exec(
                select(JobWebhook.job_id, JobWebhook.cursor, Job.event_seq)
                .join(Job, col(Job.id) == col(JobWebhook.job_id))
                .where(col(Job.event_seq) > col(JobWebhook.cursor))
                .limit(100)
            ).all()
        made = 0
        for job_id, cursor, upto in behind:
            made += self._derive_job(job_id, cursor, upto)
        return made

    def _derive_job(self, job_id: str, cursor: int, upto: int) -> int:
        data = None
        with Session(self.engine) as session, session.begin():
            # The claim: only one process moves a cursor from `cursor` (the row lock orders them).
            claimed = _changed(
                session.execute(
                    update(JobWebhook)
                    .where(col(JobWebhook.job_id) == job_id, col(JobWebhook.cursor) == cursor)
                    .values(cursor=upto)
                )
            )
            if not claimed:
                return 0
            subscription = session.get(JobWebhook, job_id)
            assert subscription is not None
            events = session.exec(
                select(JobEvent)
                .where(col(JobEvent.job_id) == job_id, col(JobEvent.seq) > cursor, col(JobEvent.seq) <= upto)
                .order_by(col(JobEvent.seq))
            ).all()
            rows = []
            for event in events:
                kind = webhook_type(event, subscription)
                if kind is None or kind not in subscription.events:
                    continue
                if data is None:
                    data = self.present(job_id)  # the job now: what GET would answer
                    if data is None:
                        break
                body = json.dumps({"type": kind, "jobId": job_id, "data": data}, separators=(",", ":"))
                rows.append(
                    {
                        "id": delivery_id(job_id, event.seq),
                        "job_id": job_id,
                        "seq": event.seq,
                        "type": kind,
                        "payload": body,
                        "state": "pending",
                        "created_at": event.created_at,
                        "attempts": 0,
                        "next_attempt_at": utcnow(),
                        "history": [],
                    }
                )
            session.execute(
                update(JobWebhook)
                .where(col(JobWebhook.job_id) == job_id)
                .values(started_sent=subscription.started_sent, last_progress_at=subscription.last_progress_at)
            )
            if rows:
                session.execute(insert(WebhookDelivery), rows)
        return len(rows)

    def _lease(self) -> list[WebhookDelivery]:
        now = utcnow()
        free = or_(col(WebhookDelivery.lease_until).is_(None), col(WebhookDelivery.lease_until) < now)
        due = and_(col(WebhookDelivery.state) == "pending", col(WebhookDelivery.next_attempt_at) <= now, free)
        with Session(self.engine) as session:
            candidates = session.exec(
                select(WebhookDelivery.id).where(due).order_by(col(WebhookDelivery.next_attempt_at)).limit(BATCH)
            ).all()
        leased = []
        for delivery in candidates:
            with Session(self.engine) as session, session.begin():
                taken = _changed(
                    session.execute(
                        update(WebhookDelivery)
                        .where(col(WebhookDelivery.id) == delivery, due)
                        .values(lease_owner=self.owner, lease_until=now + timedelta(seconds=LEASE_SECONDS))
                    )
                )
                if taken:
                    row = session.get(WebhookDelivery, delivery)
                    assert row is not None
                    session.expunge(row)
                    leased.append(row)
        return leased

    async def send_due(self, client: httpx.AsyncClient) -> int:
        """Send every delivery due now that no other process holds; how many were sent."""
        leased = self._lease()
        await asyncio.gather(*(self._attempt(client, delivery) for delivery in leased))
        return len(leased)

    async def _attempt(self, client: httpx.AsyncClient, delivery: WebhookDelivery) -> None:
        started = utcnow()
        status_code: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(ATTEMPT_SECONDS):
                pinned = await pin_webhook(self._url(delivery.job_id), allow_private=self.allow_private)
                status_code = await self._post(client, pinned, delivery, started)
            if not 200 <= status_code < 300:
                error = f"answered {status_code}" + (" (redirects are not followed)" if 300 <= status_code < 400 else "")
        except WebhookUrlRefused as refused:
            error = f"refused: {refused.message.removeprefix('webhook: ')}"
        except (TimeoutError, httpx.TimeoutException):
            error = f"no answer within {ATTEMPT_SECONDS:g} s"
        except (httpx.HTTPError, OSError) as failure:
            error = f"could not connect: {type(failure).__name__}"
        self._record(delivery, started, status_code, error)

    def _url(self, job_id: str) -> str:
        with Session(self.engine) as session:
            subscription = session.get(JobWebhook, job_id)
        if subscription is None:
            raise WebhookUrlRefused("the job's webhook is gone")
        return subscription.url

    async def _post(
        self, client: httpx.AsyncClient, pinned: list[PinnedRequest], delivery: WebhookDelivery, now: datetime
    ) -> int:
        headers = signed_headers(self.secret, delivery.id, now, delivery.payload)
        last: Exception | None = None
        for request in pinned:  # a name with an IPv6 and an IPv4 address: the next if one refuses
            sent = client.build_request(
                "POST",
                request.url,
                content=delivery.payload.encode(),
                headers={**headers, **request.headers},
                extensions=request.extensions,
            )
            try:
                # Only the status counts: the answer's body is never read (a receiver cannot make us hold a big one).
                response = await client.send(sent, stream=True)
                await response.aclose()
                return response.status_code
            except httpx.ConnectError as error:
                last = error
        assert last is not None
        raise last

    def _record(self, delivery: WebhookDelivery, at: datetime, status_code: int | None, error: str | None) -> None:
        attempt = delivery.attempts + 1
        entry = {"attempt": attempt, "at": iso(at), "statusCode": status_code, "error": error}
        values: dict[str, Any] = {
            "attempts": attempt,
            "history": [*delivery.history, entry],
            "lease_owner": None,
            "lease_until": None,
        }
        if error is None:
            values["state"] = "delivered"
        else:
            deadline = delivery.created_at + timedelta(hours=self.retry_hours)
            now = utcnow()
            if now >= deadline:
                values["state"] = "failed"
                log.warning("webhook delivery %s given up after %d attempt(s): %s", delivery.id, attempt, error)
            else:
                next_at = now + timedelta(seconds=retry_delay(attempt, self.retry_base_seconds))
                values["next_attempt_at"] = min(next_at, deadline)
        with Session(self.engine) as session, session.begin():
            kept = _changed(
                session.execute(
                    update(WebhookDelivery)
                    .where(col(WebhookDelivery.id) == delivery.id, col(WebhookDelivery.lease_owner) == self.owner)
                    .values(**values)
                )
            )
        if not kept:
            log.warning("webhook delivery %s: lease lost before its attempt was recorded", delivery.id)

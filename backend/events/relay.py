"""EventRelay: every instance's events, heard over PostgreSQL LISTEN, delivered on this process's bus.

One dedicated connection LISTENs on the EventLog's channel. NOTIFY is not a durable queue:
a notification is lost while the connection is down, so the relay checks every event's
per-job number against the last one it delivered. A gap is read back from the stored
events before the event that revealed it; after a reconnection (re-LISTEN), the events
stored since the last one heard are read back too, and duplicates are dropped by number.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from backend.events.bus import EventBus
from backend.events.log import CHANNEL, Event, EventLog

log = logging.getLogger(__name__)

#: Jobs whose last delivered number is remembered (the oldest are forgotten first).
REMEMBERED_JOBS = 10_000
#: Reading back after a reconnection starts this long before the last event heard: a
#: transaction stamps its event when it starts and may commit a little later.
CATCH_UP_MARGIN = timedelta(seconds=10)
#: Longest pause between two reconnection attempts (s); they start at 0.1 s and double.
MAX_RECONNECT_DELAY = 5.0


def psycopg_conninfo(database_url: str) -> str:
    """The libpq URL of a SQLAlchemy URL (`postgresql+psycopg://...`), password kept."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class EventRelay:
    def __init__(self, database_url: str, bus: EventBus, event_log: EventLog):
        self.conninfo = psycopg_conninfo(database_url)
        self.bus = bus
        self.event_log = event_log
        #: Set while the LISTEN connection is up (tests wait on it).
        self.listening = asyncio.Event()
        self._last_seq: OrderedDict[str, int] = OrderedDict()
        self._heard_at: datetime | None = None  # store clock of the last event heard
        self._task: asyncio.Task[None] | None = None
        self._backend_pid: int | None = None

    def start(self) -> None:
        self.bus.relayed = True
        self._task = asyncio.create_task(self._run(), name="event relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.bus.relayed = False

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend of the LISTEN connection (tests terminate it)."""
        return self._backend_pid

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database went away: listen again when it is back
                log.warning("event relay lost its connection (%s); reconnecting in %.1f s", error, delay)
            self.listening.clear()
            await asyncio.sleep(delay)  # backoff between attempts: a clock, not a wait for an event
            delay = min(delay * 2, MAX_RECONNECT_DELAY)

    async def _listen(self) -> None:
        # Keepalives: a connection cut without a FIN (a dead host) is noticed within about 25 s.
        connection = await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3
        )
        async with connection:
            await connection.execute(f"LISTEN {CHANNEL}")
            self._backend_pid = connection.info.backend_pid
            if self._heard_at is None:
                self._heard_at = self.event_log.now()  # nothing before this instance started is delivered
            else:
                self._catch_up()
            self.listening.set()
            log.info("event relay listening on %s", CHANNEL)
            async for notification in connection.notifies():
                self._receive(json.loads(notification.payload))

    def _catch_up(self) -> None:
        assert self._heard_at is not None
        for event, stored_at in self.event_log.since(self._heard_at - CATCH_UP_MARGIN):
            self._deliver_in_order(event, stored_at)

    def _receive(self, payload: dict[str, Any]) -> None:
        seq = payload.get("seq")
        if seq is None:  # job_removed: not stored, nothing to order it against
            self._last_seq.pop(payload["jobId"], None)
            self.bus.deliver({key: payload[key] for key in ("type", "jobId", "data")})
            return
        stored_at = datetime.fromisoformat(payload["at"]) if payload.get("at") else None
        if payload.get("ref"):  # too big for NOTIFY: read it back
            self._fill(payload["jobId"], seq)
            return
        self._deliver_in_order({key: payload[key] for key in ("type", "jobId", "data", "seq")}, stored_at)

    def _deliver_in_order(self, event: Event, stored_at: datetime | None) -> None:
        job_id, seq = event["jobId"], event["seq"]
        last = self._last_seq.get(job_id)
        if last is not None and seq <= last:
            return  # heard twice (a read-back and its NOTIFY)
        if last is not None and seq > last + 1:
            self._fill(job_id, seq)  # lost NOTIFYs: the missing events, then this one
            return
        self._deliver(event, stored_at)

    def _fill(self, job_id: str, upto: int) -> None:
        last = self._last_seq.get(job_id, upto - 1)
        for event in self.event_log.after(job_id, last, limit=upto - last, upto=upto):
            self._deliver(event, None)

    def _deliver(self, event: Event, stored_at: datetime | None) -> None:
        job_id = event["jobId"]
        self._last_seq[job_id] = event["seq"]
        self._last_seq.move_to_end(job_id)
        while len(self._last_seq) > REMEMBERED_JOBS:
            self._last_seq.popitem(last=False)
        if stored_at is not None and (self._heard_at is None or stored_at > self._heard_at):
            self._heard_at = stored_at
        self.bus.deliver(event)

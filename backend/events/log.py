"""EventLog: every published event, stored with its job's next sequence number.

The number comes from an UPDATE of the job's row, so two processes that publish for one job
(the worker that runs it, the API instance that cancels it) are serialised by the row lock:
per job the numbers have no gaps and commit in order. On PostgreSQL the same transaction
NOTIFYs the event, so every instance hears it after the commit, in commit order (EventRelay).
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Connection, Engine, bindparam, delete, func, insert, text, update
from sqlmodel import Session, col, select

from backend.store.models import Job, JobEvent, UtcDateTime, utcnow

Event = dict[str, Any]

#: The PostgreSQL channel every instance LISTENs on.
CHANNEL = "promptreel_events"
#: NOTIFY payloads must stay under 8000 bytes: a bigger event goes out as a reference to its row.
MAX_NOTIFY_BYTES = 7000


# Built once: an event is a few of these per job step, and building a statement costs more than running it.
_NEXT_SEQ = (
    update(Job)
    .where(col(Job.id) == bindparam("job_id"))
    .values(event_seq=col(Job.event_seq) + bindparam("count"))
    .returning(col(Job.event_seq))
)
_INSERT = insert(JobEvent).values(
    job_id=bindparam("b_job_id"),
    seq=bindparam("b_seq"),
    type=bindparam("b_type"),
    data=bindparam("b_data", type_=JSON),
    created_at=bindparam("b_created_at", type_=UtcDateTime()),
)
# On PostgreSQL the database's clock stamps events, so every host compares against one clock.
_INSERT_STAMPED = (
    insert(JobEvent)
    .values(
        job_id=bindparam("b_job_id"),
        seq=bindparam("b_seq"),
        type=bindparam("b_type"),
        data=bindparam("b_data", type_=JSON),
        created_at=func.now(),
    )
    .returning(col(JobEvent.created_at))
)
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


def event_of(row: JobEvent) -> Event:
    return {"type": row.type, "jobId": row.job_id, "data": row.data, "seq": row.seq}


class EventLog:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.notifies = engine.dialect.name == "postgresql"

    def append(
        self, job_id: str, events: list[tuple[str, dict[str, Any]]], *, connection: Connection | None = None
    ) -> int | None:
        """Store events of one job, in order, in one transaction (the caller's, when it gives its
        `connection`: the state change the events tell of), and (PostgreSQL) NOTIFY them; the last
        one's number, or None when the job is gone (`job_removed`: told to the other instances,
        not stored)."""
        with nullcontext(connection) if connection is not None else self.engine.begin() as connection:
            last = connection.execute(_NEXT_SEQ, {"job_id": job_id, "count": len(events)}).scalar_one_or_none()
            first = None if last is None else last - len(events) + 1
            rows = (
                [
                    {"b_job_id": job_id, "b_seq": first + index, "b_type": type_, "b_data": data}
                    for index, (type_, data) in enumerate(events)
                ]
                if first is not None
                else []
            )
            stamps: list[str | None] = [None] * len(events)
            if rows and not self.notifies:
                now = utcnow()
                connection.execute(_INSERT, [{**row, "b_created_at": now} for row in rows])
            elif rows:
                stamps = [connection.execute(_INSERT_STAMPED, row).scalar_one().isoformat() for row in rows]
            if self.notifies:
                for index, (type_, data) in enumerate(events):
                    seq = None if first is None else first + index
                    payload = json.dumps({"type": type_, "jobId": job_id, "data": data, "seq": seq, "at": stamps[index]})
                    if len(payload.encode()) > MAX_NOTIFY_BYTES:
                        payload = json.dumps({"jobId": job_id, "seq": seq, "ref": True})
                    connection.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload})
        return last

    def after(self, job_id: str, after: int, limit: int, upto: int | None = None) -> list[Event]:
        """The job's events numbered above `after` (and at most `upto`), in order."""
        query = select(JobEvent).where(col(JobEvent.job_id) == job_id, col(JobEvent.seq) > after)
        if upto is not None:
            query = query.where(col(JobEvent.seq) <= upto)
        with Session(self.engine) as session:
            return [event_of(row) for row in session.exec(query.order_by(col(JobEvent.seq)).limit(limit))]

    def since(self, moment: datetime) -> list[tuple[Event, datetime]]:
        """Every event stored at or after `moment`, per job in order, with its time."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(JobEvent).where(col(JobEvent.created_at) >= moment).order_by(col(JobEvent.job_id), col(JobEvent.seq))
            )
            return [(event_of(row), row.created_at) for row in rows]

    def now(self) -> datetime:
        """The store's clock (PostgreSQL's for a cluster: the one the events are stamped with)."""
        if not self.notifies:
            return utcnow()
        with self.engine.connect() as connection:
            return connection.execute(select(func.now())).scalar_one()

    def prune(self, before: datetime) -> int:
        """Forget events stored before `before`; the jobs themselves stay."""
        with self.engine.begin() as connection:
            return connection.execute(delete(JobEvent).where(col(JobEvent.created_at) < before)).rowcount

"""JobStore: every read and write of jobs and steps, each in one short transaction.

Finished is final: a job that is completed, failed or cancelled never changes its status,
progress, cost or steps again, and a step that ended never changes either. Every write says so
in its own WHERE clause (one conditional UPDATE, the same on SQLite and PostgreSQL), so when two
processes race (the owner writing a step's result, another instance recording a cancel) the
first to commit wins and the other gets `JobFinished`, whatever the order their calls started
in. A transaction that writes a job and its steps writes the job's row first: that row lock
orders them on PostgreSQL. The one change allowed afterwards is `record_after_end`.

The pipeline's hot path (get, update, progress, log) uses Core statements built once and reused,
whose rows become detached models through `model_construct`: the ORM's session, identity map and
unit of work cost about four times as much per call and bought nothing here (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, Row, Update, bindparam, case, delete, exists, func, insert, literal_column, or_, update
from sqlalchemy import select as core_select
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import configure_mappers
from sqlalchemy.orm.instrumentation import manager_of_class
from sqlmodel import Session, SQLModel, col, select

from backend.store.models import (
    FINISHED_STATUSES,
    UNFINISHED_STATUSES,
    Job,
    JobEvent,
    JobStatus,
    JobStep,
    StepKind,
    StepStatus,
    utcnow,
)


@dataclass(frozen=True)
class JobRecord:
    """A job with its steps in pipeline order, detached from any session."""

    job: Job
    steps: tuple[JobStep, ...]

    def step(self, kind: StepKind) -> JobStep:
        return next(step for step in self.steps if step.kind == kind)


_STEP_ORDER = {StepKind.IMAGE.value: 0, StepKind.VIDEO.value: 1}
OPEN_STEP_STATUSES = (StepStatus.PENDING.value, StepStatus.RUNNING.value)


def _constants(values: Iterable[str]) -> list[Any]:
    """Fixed values written into the statement's text: a list of bound values would be expanded
    again at every execution of a statement built once (a third of a write's time)."""
    return [literal_column(f"'{value}'") for value in values]  # our own enum values, never input


#: The cost column each step's charge goes to.
COST_COLUMN = {StepKind.IMAGE: "image_cost", StepKind.VIDEO: "video_cost"}


class JobGone(KeyError):
    """A write for a job that is no longer stored: it was removed meanwhile (by another process)."""


class JobFinished(Exception):
    """A write that lost: the job had finished (or the step had ended) before it. Nothing was
    written; `status` is the job's status as it stands."""

    def __init__(self, job_id: str, status: str):
        super().__init__(f"job {job_id} is {status}: finished is final")
        self.job_id = job_id
        self.status = status


T = TypeVar("T", bound=SQLModel)
configure_mappers()  # the instrumentation `_detached` relies on, set up before the first query would
JOBS = Job.__table__  # type: ignore[attr-defined]  # SQLModel sets __table__ without declaring it
STEPS = JobStep.__table__  # type: ignore[attr-defined]


def _detached(model: type[T], row: Row[Any]) -> T:
    """A model from a row without the ORM's loading: `model_construct` skips validation (the row
    is the store's own), `setup_instance` gives it the instrumentation state attribute writes need."""
    # pydantic's mypy plugin types model_construct on SQLModel itself as returning SQLModel, not T
    instance = cast(T, model.model_construct(**row._mapping))
    manager_of_class(model).setup_instance(instance)
    return instance


def _job(row: Row[Any]) -> Job:
    return _detached(Job, row)


def _step(row: Row[Any]) -> JobStep:
    return _detached(JobStep, row)


def _steps_in_order(rows: Iterable[Row[Any]]) -> tuple[JobStep, ...]:
    return tuple(sorted((_step(row) for row in rows), key=lambda step: _STEP_ORDER[step.kind]))


_GET_JOB = core_select(JOBS).where(JOBS.c.id == bindparam("job_id"))
_GET_STATUS = core_select(JOBS.c.status).where(JOBS.c.id == bindparam("job_id"))
_GET_STEPS = core_select(STEPS).where(STEPS.c.job_id == bindparam("job_id"))  # a SELECT: any name will do
_UNFINISHED_JOB = JOBS.c.status.not_in(_constants(status.value for status in FINISHED_STATUSES))
#: A step still open, of a job not finished (the EXISTS: a PK lookup).
_OPEN_STEP = (
    STEPS.c.status.in_(_constants(OPEN_STEP_STATUSES)),
    exists().where(JOBS.c.id == STEPS.c.job_id, _UNFINISHED_JOB),
)
_RISES = JOBS.c.progress < bindparam("progress")
# It always takes the job's row (its lock orders the transaction before the step's write); the
# progress and updated_at only move when the progress goes up: it never goes down.
_RAISE_JOB_PROGRESS = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("job_id"), _UNFINISHED_JOB)
    .values(
        progress=case((_RISES, bindparam("progress")), else_=JOBS.c.progress),
        updated_at=case((_RISES, bindparam("now", type_=JOBS.c.updated_at.type)), else_=JOBS.c.updated_at),
    )
    .returning(*JOBS.c)
)
_GET_OPEN_STEPS = core_select(STEPS).where(
    STEPS.c.job_id == bindparam("job_id"), STEPS.c.status.in_(_constants(OPEN_STEP_STATUSES))
)
_THE_STEP = (STEPS.c.job_id == bindparam("step_job_id"), STEPS.c.kind == bindparam("step_kind"))
# A log grows by read-modify-write; reading it with a no-op UPDATE takes the row's lock (SQLite: the
# write lock) first, so no line of another writer is lost and SQLite never has to upgrade a read.
_TAKE_OPEN_STEP_LOG = update(STEPS).where(*_THE_STEP, *_OPEN_STEP).values(log=STEPS.c.log).returning(STEPS.c.id, STEPS.c.log)
_TAKE_STEP_LOG = update(STEPS).where(*_THE_STEP).values(log=STEPS.c.log).returning(STEPS.c.id, STEPS.c.log)
_SET_STEP_LOG = update(STEPS).where(STEPS.c.id == bindparam("step_id")).values(log=bindparam("new_log", type_=STEPS.c.log.type))
_INSERT_JOB = insert(JOBS).returning(*JOBS.c)
_INSERT_STEP = (
    insert(STEPS)
    .values(job_id=bindparam("step_job_id"), kind=bindparam("step_kind"), status=StepStatus.PENDING.value, progress=0, log=[])
    .returning(*STEPS.c, sort_by_parameter_order=True)
)


def _free(stale_before: Any) -> Any:
    """A job no live process owns: never claimed, released, or its owner stopped beating
    (`stale_before`: a time, or the bound parameter of a statement built once)."""
    return or_(JOBS.c.worker_id.is_(None), JOBS.c.heartbeat_at.is_(None), JOBS.c.heartbeat_at < stale_before)


_CLAIM = (
    update(JOBS)
    .where(
        JOBS.c.id == bindparam("job_id"),
        or_(_free(bindparam("stale_before", type_=JOBS.c.heartbeat_at.type)), JOBS.c.worker_id == bindparam("worker")),
    )
    .values(worker_id=bindparam("worker"), heartbeat_at=bindparam("now", type_=JOBS.c.heartbeat_at.type))
)
_COUNT_UNFINISHED = (
    core_select(func.count()).select_from(JOBS).where(JOBS.c.status.in_([status.value for status in UNFINISHED_STATUSES]))
)


@cache
def _update_job(names: tuple[str, ...]) -> Update:
    """UPDATE of these job columns (and updated_at) of an unfinished job, made once per set of names."""
    values = {name: bindparam(f"new_{name}", type_=JOBS.c[name].type) for name in names}
    return update(JOBS).where(JOBS.c.id == bindparam("job_id"), _UNFINISHED_JOB).values(values).returning(*JOBS.c)


@cache
def _update_step(names: tuple[str, ...]) -> Update:
    """UPDATE of these columns of a step still open, of an unfinished job."""
    values = {name: bindparam(f"new_{name}", type_=STEPS.c[name].type) for name in names}
    return (
        update(STEPS)
        .where(STEPS.c.job_id == bindparam("step_job_id"), STEPS.c.kind == bindparam("step_kind"), *_OPEN_STEP)
        .values(values)
        .returning(*STEPS.c)
    )


@cache
def _update_open_step(names: tuple[str, ...]) -> Update:
    """UPDATE of a step still open, in a transaction that holds its job's row already."""
    values = {name: bindparam(f"new_{name}", type_=STEPS.c[name].type) for name in names}
    return (
        update(STEPS)
        .where(
            STEPS.c.job_id == bindparam("step_job_id"),
            STEPS.c.kind == bindparam("step_kind"),
            STEPS.c.status.in_(_constants(OPEN_STEP_STATUSES)),
        )
        .values(values)
        .returning(*STEPS.c)
    )


@cache
def _add_charge(column: str) -> Update:
    return (
        update(JOBS)
        .where(JOBS.c.id == bindparam("job_id"))
        .values({column: JOBS.c[column] + bindparam("charge", type_=JOBS.c[column].type)})
        .returning(*JOBS.c)
    )


def _new_values(fields: dict[str, Any]) -> dict[str, Any]:
    return {f"new_{name}": value for name, value in fields.items()}


class JobStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def transaction(self) -> AbstractContextManager[Connection]:
        """One transaction for several writes (a state change and its events, see Pipeline):
        pass it as `connection=` to the write methods."""
        return self.engine.begin()

    def _writing(self, connection: Connection | None) -> AbstractContextManager[Connection]:
        return nullcontext(connection) if connection is not None else self.engine.begin()

    def ping(self) -> None:
        with self._session() as session:
            session.exec(select(1)).one()

    def create(self, job: Job, *, connection: Connection | None = None) -> JobRecord:
        with self._writing(connection) as connection:
            row = connection.execute(_INSERT_JOB, {column.name: getattr(job, column.name) for column in JOBS.c}).one()
            steps = connection.execute(
                _INSERT_STEP, [{"step_job_id": job.id, "step_kind": kind.value} for kind in job.step_kinds]
            ).all()
        return JobRecord(_job(row), _steps_in_order(steps))

    def get(self, job_id: str) -> JobRecord | None:
        if "\x00" in job_id:  # no id holds a NUL, and PostgreSQL refuses one in a query (a 500 before)
            return None
        with self.engine.connect() as connection:
            row = connection.execute(_GET_JOB, {"job_id": job_id}).one_or_none()
            if row is None:
                return None
            steps = connection.execute(_GET_STEPS, {"job_id": job_id}).all()
        return JobRecord(_job(row), _steps_in_order(steps))

    def status(self, job_id: str) -> str | None:
        """Just the job's status (None: it is gone), for a check on the hot path."""
        with self.engine.connect() as connection:
            return connection.execute(_GET_STATUS, {"job_id": job_id}).scalar_one_or_none()

    def list(
        self,
        *,
        statuses: Iterable[str] = (),
        search: str | None = None,
        limit: int = 50,
        offset: int = 0,
        owner: str | None = None,
        batch_id: str | None = None,
    ) -> tuple[list[JobRecord], int]:
        """Newest first, with the total count of matching jobs; only `owner`'s when one is given, only
        the jobs of batch `batch_id` when one is given."""
        if search and "\x00" in search:  # no prompt holds a NUL (GenerateRequest), and PostgreSQL refuses one
            return [], 0
        filters: list[Any] = []
        if owner is not None:
            filters.append(col(Job.owner) == owner)
        if batch_id is not None:
            filters.append(col(Job.batch_id) == batch_id)
        statuses = list(statuses)
        if statuses:
            filters.append(col(Job.status).in_(statuses))
        if search:
            # Bound parameter with LIKE wildcards escaped: the text is matched, never run.
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            filters.append(func.lower(Job.prompt).like(f"%{escaped.lower()}%", escape="\\"))
        with self._session() as session:
            total = session.exec(select(func.count()).select_from(Job).where(*filters)).one()
            # OFFSET steps over the rows it skips one by one: a page past the middle is read from the
            # oldest end instead, so the last pages cost what the first ones do (the middle: half).
            from_oldest = max(0, total - offset - limit)
            if from_oldest < offset < total:
                query = select(Job).where(*filters).order_by(col(Job.created_at), col(Job.id))
                jobs = session.exec(query.offset(from_oldest).limit(total - offset - from_oldest)).all()[::-1]
            else:
                query = select(Job).where(*filters).order_by(col(Job.created_at).desc(), col(Job.id).desc())
                jobs = session.exec(query.offset(offset).limit(limit)).all()
            steps_by_job: dict[str, list[JobStep]] = {job.id: [] for job in jobs}
            if jobs:
                for step in session.exec(select(JobStep).where(col(JobStep.job_id).in_(list(steps_by_job)))):
                    steps_by_job[step.job_id].append(step)
        records = [JobRecord(job, tuple(sorted(steps_by_job[job.id], key=lambda s: _STEP_ORDER[s.kind]))) for job in jobs]
        return records, total

    def _lost(self, connection: Connection, job_id: str) -> Exception:
        """Why a conditional write matched no row: the job is gone (JobGone), or it finished."""
        status = connection.execute(_GET_STATUS, {"job_id": job_id}).scalar_one_or_none()
        return JobGone(job_id) if status is None else JobFinished(job_id, status)

    def update_job(self, job_id: str, *, connection: Connection | None = None, **fields: Any) -> Job:
        """Write these fields of an unfinished job (a status that finishes it included: the first
        such write wins); JobFinished when the job had finished already."""
        fields["updated_at"] = utcnow()
        with self._writing(connection) as connection:
            row = connection.execute(_update_job(tuple(fields)), {"job_id": job_id, **_new_values(fields)}).one_or_none()
            if row is None:
                raise self._lost(connection, job_id)
        return _job(row)

    def update_step(self, job_id: str, kind: StepKind, *, connection: Connection | None = None, **fields: Any) -> JobStep:
        """Write these fields of a step still open; JobFinished when it ended or its job finished."""
        with self._writing(connection) as connection:
            row = connection.execute(
                _update_step(tuple(fields)), {"step_job_id": job_id, "step_kind": kind.value, **_new_values(fields)}
            ).one_or_none()
            if row is None:
                raise self._lost(connection, job_id)
        return _step(row)

    def record_progress(
        self,
        job_id: str,
        kind: StepKind,
        step_progress: int,
        job_progress: int,
        *,
        connection: Connection | None = None,
        **step_fields: Any,
    ) -> tuple[JobStep, Job | None]:
        """Set a step's progress (and `step_fields`) and raise its job's, in one transaction: the
        job when its progress went up, None when it was already there (it never goes down).
        JobFinished, and nothing written, once the job finished or the step ended."""
        fields = {"progress": step_progress, **step_fields}
        now = utcnow()
        with self._writing(connection) as connection:
            job = connection.execute(_RAISE_JOB_PROGRESS, {"job_id": job_id, "progress": job_progress, "now": now}).one_or_none()
            if job is None:
                raise self._lost(connection, job_id)
            step = connection.execute(
                _update_step(tuple(fields)), {"step_job_id": job_id, "step_kind": kind.value, **_new_values(fields)}
            ).one_or_none()
            if step is None:  # the step ended: the job's row is written back as it was, with the rollback
                raise JobFinished(job_id, job.status)
        return _step(step), _job(job) if job.updated_at == now else None

    def close_job(
        self,
        job_id: str,
        status: JobStatus,
        running_outcome: StepStatus,
        note: str,
        *,
        connection: Connection | None = None,
        **fields: Any,
    ) -> tuple[Job, builtins.list[JobStep]]:
        """Finish a job and end its open steps, in one transaction: a running step gets
        `running_outcome` and `note` in its log, a pending one is cancelled. The job and the steps
        it ended; JobFinished when it had finished already (nothing written)."""
        assert status.finished
        closed = []
        with self._writing(connection) as connection:
            job = self.update_job(job_id, connection=connection, status=status.value, **fields)  # first: the job's row
            for row in connection.execute(_GET_OPEN_STEPS, {"job_id": job_id}).all():
                values: dict[str, Any] = {"status": StepStatus.CANCELLED.value}
                if row.status == StepStatus.RUNNING.value:
                    values = {"status": running_outcome.value, "ended_at": utcnow(), "log": [*row.log, note]}
                step = connection.execute(
                    _update_open_step(tuple(values)), {"step_job_id": job_id, "step_kind": row.kind, **_new_values(values)}
                ).one()
                closed.append(_step(step))
        return job, sorted(closed, key=lambda step: _STEP_ORDER[step.kind])

    def complete_job(
        self, job_id: str, kind: StepKind, *, connection: Connection | None = None, **fields: Any
    ) -> tuple[Job, JobStep]:
        """Store the last step's output (`fields` of the job), end that step and complete the job,
        in one transaction: the job and the step. JobFinished (nothing written) once it had ended."""
        with self._writing(connection) as connection:
            job = self.update_job(job_id, connection=connection, **fields, status=JobStatus.COMPLETED.value, progress=100)
            values = {"status": StepStatus.COMPLETED.value, "progress": 100, "ended_at": utcnow()}
            # The job's row is ours now (and says completed): only the step's own state is checked.
            step = connection.execute(
                _update_open_step(tuple(values)), {"step_job_id": job_id, "step_kind": kind.value, **_new_values(values)}
            ).one_or_none()
            if step is None:
                raise JobFinished(job_id, StepStatus.COMPLETED.value)  # the step had ended: the rollback undoes the job's write
        return job, _step(step)

    def append_log(self, job_id: str, kind: StepKind, line: str) -> bool:
        """Add a line to an open step's log; dropped (False) once the step ended or the job finished."""
        with self.engine.begin() as connection:
            row = connection.execute(_TAKE_OPEN_STEP_LOG, {"step_job_id": job_id, "step_kind": kind.value}).one_or_none()
            if row is None:
                return False
            connection.execute(_SET_STEP_LOG, {"step_id": row.id, "new_log": [*row.log, line]})
        return True

    def record_after_end(
        self, job_id: str, kind: StepKind, line: str, charge: float = 0.0, *, connection: Connection | None = None
    ) -> Job:
        """The one change allowed to a finished job (or a step that ended): money spent is never
        hidden. Adds `charge`, what the provider billed for work whose result came too late (after
        a cancel), to the step's cost, and `line` to the step's log, saying what became of that
        work. A cost only goes up, and stays the sum of the steps' costs."""
        if not charge >= 0:
            raise ValueError(f"a charge is never negative: {charge}")
        with self._writing(connection) as connection:
            row = connection.execute(
                _add_charge(COST_COLUMN[kind]), {"job_id": job_id, "charge": charge}
            ).one_or_none()  # the job's row first
            if row is None:
                raise JobGone(job_id)
            step = connection.execute(_TAKE_STEP_LOG, {"step_job_id": job_id, "step_kind": kind.value}).one()
            connection.execute(_SET_STEP_LOG, {"step_id": step.id, "new_log": [*step.log, line]})
        return _job(row)

    def count_unfinished(self) -> int:
        """Jobs pending or running (the queue limit), counted on the status index."""
        with self.engine.connect() as connection:
            return connection.execute(_COUNT_UNFINISHED).scalar_one()

    def unfinished_ids(self, stale_before: datetime) -> builtins.list[str]:
        """Pending or running jobs that no live process owns, oldest first (the order they were asked for)."""
        with self._session() as session:
            return list(
                session.exec(
                    select(Job.id)
                    .where(col(Job.status).in_(list(UNFINISHED_STATUSES)), _free(stale_before))
                    .order_by(col(Job.created_at))
                )
            )

    def claim(self, job_id: str, worker_id: str, stale_before: datetime) -> bool:
        """Take a job for `worker_id` unless another live process owns it (one atomic UPDATE)."""
        with self.engine.begin() as connection:
            result = connection.execute(
                _CLAIM, {"job_id": job_id, "worker": worker_id, "stale_before": stale_before, "now": utcnow()}
            )
            return result.rowcount == 1

    def heartbeat(self, worker_id: str, job_ids: Iterable[str]) -> builtins.list[str]:
        """Say `worker_id` still runs these jobs; returns those that were cancelled meanwhile
        (by another process: the API while `promptreel generate` runs the job, say)."""
        job_ids = list(job_ids)
        if not job_ids:
            return []
        mine = (col(Job.id).in_(job_ids), col(Job.worker_id) == worker_id)
        with self._session() as session:
            session.execute(update(Job).where(*mine).values(heartbeat_at=utcnow()))
            session.commit()
            return list(session.exec(select(Job.id).where(*mine, col(Job.status) == JobStatus.CANCELLED.value)))

    def release(self, worker_id: str, job_ids: Iterable[str]) -> None:
        """Give up jobs this process stops running without ending them: the next start takes them at once."""
        with self._session() as session:
            session.execute(
                update(Job).where(col(Job.id).in_(list(job_ids)), col(Job.worker_id) == worker_id).values(worker_id=None)
            )
            session.commit()

    def count_by_status(self, statuses: Iterable[str] = ()) -> dict[str, int]:
        """Jobs per status, for the statuses some job has; only `statuses` when given. Counting all
        reads every job (6 ms at 100,000 on SQLite); a few statuses that hold few jobs, such as the
        unfinished ones, are counted from their index range alone."""
        query = select(Job.status, func.count()).group_by(Job.status)
        statuses = list(statuses)
        if statuses:
            query = query.where(col(Job.status).in_(statuses))
        with self._session() as session:
            rows: Sequence[tuple[str, int]] = session.exec(query).all()
        return {status: count for status, count in rows}

    def delete(self, job_id: str) -> bool:
        with self._session() as session:
            session.execute(delete(JobEvent).where(col(JobEvent.job_id) == job_id))
            session.execute(delete(JobStep).where(col(JobStep.job_id) == job_id))
            # Session.execute is typed as Result; a DELETE's is a CursorResult, which has the rowcount
            result = cast(CursorResult[Any], session.execute(delete(Job).where(col(Job.id) == job_id)))
            session.commit()
            return bool(result.rowcount)

    def media_to_expire(self, older_than: datetime, limit: int) -> builtins.list[str]:
        """Finished jobs last changed before `older_than` whose media retention has not removed yet, oldest first."""
        finished = [status.value for status in FINISHED_STATUSES]
        with self._session() as session:
            return list(
                session.exec(
                    select(Job.id)
                    .where(
                        col(Job.status).in_(finished),
                        col(Job.media_expired_at).is_(None),
                        # created_at <= updated_at: the indexed column narrows the scan, updated_at decides.
                        col(Job.created_at) < older_than,
                        col(Job.updated_at) < older_than,
                    )
                    .order_by(col(Job.updated_at))
                    .limit(limit)
                )
            )

    def mark_media_expired(self, job_id: str, when: datetime) -> Job | None:
        """Record that retention removed the job's media (one conditional UPDATE); None when another
        process marked it first or the job is gone, so only one of them announces it."""
        with self._session() as session:
            result = cast(
                CursorResult[Any],
                session.execute(
                    update(Job)
                    .where(col(Job.id) == job_id, col(Job.media_expired_at).is_(None))
                    .values(media_expired_at=when, updated_at=when)
                ),
            )
            session.commit()
            return session.get(Job, job_id) if result.rowcount == 1 else None

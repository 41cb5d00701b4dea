"""JobStore: every read and write of jobs and steps, each in one short transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, or_, update
from sqlmodel import Session, col, select

from .models import UNFINISHED_STATUSES, Job, JobEvent, JobStatus, JobStep, StepKind, utcnow


@dataclass(frozen=True)
class JobRecord:
    """A job with its steps in pipeline order, detached from any session."""

    job: Job
    steps: tuple[JobStep, ...]

    def step(self, kind: StepKind) -> JobStep:
        return next(step for step in self.steps if step.kind == kind)


_STEP_ORDER = {StepKind.IMAGE.value: 0, StepKind.VIDEO.value: 1}


def _free(stale_before: datetime) -> Any:
    """A job no live process owns: never claimed, released, or its owner stopped beating."""
    return or_(col(Job.worker_id).is_(None), col(Job.heartbeat_at).is_(None), col(Job.heartbeat_at) < stale_before)


class JobStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def ping(self) -> None:
        with self._session() as session:
            session.exec(select(1)).one()

    def create(self, job: Job) -> JobRecord:
        steps = [JobStep(job_id=job.id, kind=kind.value) for kind in StepKind]
        with self._session() as session:
            session.add(job)
            session.flush()  # the job row first: steps reference it
            session.add_all(steps)
            session.commit()
        return JobRecord(job, tuple(steps))

    def get(self, job_id: str) -> JobRecord | None:
        if "\x00" in job_id:  # no id holds a NUL, and PostgreSQL refuses one in a query (a 500 before)
            return None
        with self._session() as session:
            job = session.get(Job, job_id)
            if job is None:
                return None
            steps = session.exec(select(JobStep).where(JobStep.job_id == job_id)).all()
        return JobRecord(job, tuple(sorted(steps, key=lambda s: _STEP_ORDER[s.kind])))

    def list(
        self,
        *,
        statuses: Iterable[str] = (),
        search: str | None = None,
        limit: int = 50,
        offset: int = 0,
        owner: str | None = None,
    ) -> tuple[list[JobRecord], int]:
        """Newest first, with the total count of matching jobs; only `owner`'s when one is given."""
        if search and "\x00" in search:  # no prompt holds a NUL (GenerateRequest), and PostgreSQL refuses one
            return [], 0
        filters: list[Any] = []
        if owner is not None:
            filters.append(col(Job.owner) == owner)
        statuses = list(statuses)
        if statuses:
            filters.append(col(Job.status).in_(statuses))
        if search:
            # Bound parameter with LIKE wildcards escaped: the text is matched, never run.
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            filters.append(func.lower(Job.prompt).like(f"%{escaped.lower()}%", escape="\\"))
        with self._session() as session:
            total = session.exec(select(func.count()).select_from(Job).where(*filters)).one()
            jobs = session.exec(
                select(Job).where(*filters).order_by(col(Job.created_at).desc(), col(Job.id).desc()).offset(offset).limit(limit)
            ).all()
            steps_by_job: dict[str, list[JobStep]] = {job.id: [] for job in jobs}
            if jobs:
                for step in session.exec(select(JobStep).where(col(JobStep.job_id).in_(list(steps_by_job)))):
                    steps_by_job[step.job_id].append(step)
        records = [
            JobRecord(job, tuple(sorted(steps_by_job[job.id], key=lambda s: _STEP_ORDER[s.kind]))) for job in jobs
        ]
        return records, total

    def update_job(self, job_id: str, **fields: Any) -> Job:
        with self._session() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise KeyError(job_id)
            for name, value in fields.items():
                setattr(job, name, value)
            job.updated_at = utcnow()
            session.add(job)
            session.commit()
            return job

    def update_step(self, job_id: str, kind: StepKind, **fields: Any) -> JobStep:
        with self._session() as session:
            step = session.exec(select(JobStep).where(JobStep.job_id == job_id, JobStep.kind == kind.value)).one()
            for name, value in fields.items():
                setattr(step, name, value)
            session.add(step)
            session.commit()
            return step

    def record_progress(self, job_id: str, kind: StepKind, step_progress: int, job_progress: int) -> tuple[JobStep, Job, bool]:
        """Set a step's progress and raise its job's (never lower it), in one transaction."""
        with self._session() as session:
            step = session.exec(select(JobStep).where(JobStep.job_id == job_id, JobStep.kind == kind.value)).one()
            job = session.get(Job, job_id)
            if job is None:
                raise KeyError(job_id)
            step.progress = step_progress
            session.add(step)
            job_changed = job_progress > job.progress
            if job_changed:
                job.progress = job_progress
                job.updated_at = utcnow()
                session.add(job)
            session.commit()
            return step, job, job_changed

    def append_log(self, job_id: str, kind: StepKind, line: str) -> None:
        with self._session() as session:
            step = session.exec(select(JobStep).where(JobStep.job_id == job_id, JobStep.kind == kind.value)).one()
            step.log = [*step.log, line]  # a new list, so the JSON column sees the change
            session.add(step)
            session.commit()

    def unfinished_ids(self, stale_before: datetime) -> list[str]:
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
        with self._session() as session:
            result = session.execute(
                update(Job)
                .where(col(Job.id) == job_id, or_(_free(stale_before), col(Job.worker_id) == worker_id))
                .values(worker_id=worker_id, heartbeat_at=utcnow())
            )
            session.commit()
            return result.rowcount == 1

    def heartbeat(self, worker_id: str, job_ids: Iterable[str]) -> list[str]:
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

    def count_by_status(self) -> dict[str, int]:
        with self._session() as session:
            rows: Sequence[tuple[str, int]] = session.exec(
                select(Job.status, func.count()).group_by(Job.status)
            ).all()
        return {status: count for status, count in rows}

    def delete(self, job_id: str) -> bool:
        with self._session() as session:
            session.execute(delete(JobEvent).where(col(JobEvent.job_id) == job_id))
            session.execute(delete(JobStep).where(col(JobStep.job_id) == job_id))
            result = session.execute(delete(Job).where(col(Job.id) == job_id))
            session.commit()
            return bool(result.rowcount)

    def media_to_expire(self, older_than: datetime, limit: int) -> list[str]:
        """Finished jobs last changed before `older_than` whose media retention has not removed yet, oldest first."""
        finished = [status.value for status in JobStatus if status.finished]
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
            result = session.execute(
                update(Job)
                .where(col(Job.id) == job_id, col(Job.media_expired_at).is_(None))
                .values(media_expired_at=when, updated_at=when)
            )
            session.commit()
            return session.get(Job, job_id) if result.rowcount == 1 else None

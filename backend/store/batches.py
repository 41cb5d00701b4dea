"""BatchStore: the rows of batches (POST /api/v1/batches). Their jobs are the job store's, each
naming its batch in `jobs.batch_id`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, insert, select
from sqlmodel import col

from backend.store.jobs import JobRecord
from backend.store.models import Batch

BATCHES = Batch.__table__  # type: ignore[attr-defined]  # SQLModel sets __table__ without declaring it


@dataclass(frozen=True)
class BatchRecord:
    """A batch with its jobs, in the order they were made."""

    batch: Batch
    jobs: list[JobRecord]


class BatchStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def create(self, batch: Batch, connection: Connection) -> None:
        """Insert the batch in the caller's transaction (the one that writes its jobs)."""
        connection.execute(insert(BATCHES).values(id=batch.id, owner=batch.owner, created_at=batch.created_at))

    def get(self, batch_id: str) -> Batch | None:
        if "\x00" in batch_id:  # PostgreSQL refuses a NUL in a query; no id holds one
            return None
        with self.engine.connect() as connection:
            row = connection.execute(select(BATCHES).where(col(Batch.id) == batch_id)).one_or_none()
        return None if row is None else Batch.model_validate(dict(row._mapping))

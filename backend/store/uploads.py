"""The `uploads` table and UploadStore: the pictures users uploaded (their bytes are in the MediaStore).

A job that animates an upload and the upload's removal meet on the upload's row, in the database
(several instances may share it): the transaction that stores the job locks the row for share and
fails if it is gone (`claim`); a removal locks it for update, then deletes it only if no
unfinished job uses it (`delete_unless_used`). PostgreSQL orders the two by the row lock (each
statement after it sees what the other committed); SQLite by its single writer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Column, Connection, Engine, and_, delete, exists, or_
from sqlalchemy.engine import CursorResult
from sqlmodel import Field, Session, SQLModel, col, select
from sqlmodel.sql.expression import SelectOfScalar

from backend.store.models import UNFINISHED_STATUSES, Job, UtcDateTime, utcnow


class Upload(SQLModel, table=True):
    __tablename__ = "uploads"

    id: str = Field(primary_key=True, max_length=64)
    #: The user who uploaded it (None: authentication was off); others never see it.
    owner: str | None = Field(default=None, max_length=64, index=True)
    content_type: str = Field(max_length=32)
    width: int
    height: int
    #: Size of the stored (cleaned) file.
    bytes: int
    #: The file name the client sent, for the user's eyes only (never a path).
    name: str | None = Field(default=None, max_length=255)
    #: Where the MediaStore keeps it (`uploads/{id}`).
    path: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UtcDateTime(), index=True, nullable=False))


class UploadStore:
    """Every read and write of the uploads table, each in one short transaction."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def add(self, upload: Upload) -> Upload:
        with self._session() as session:
            session.add(upload)
            session.commit()
            return upload

    def get(self, upload_id: str) -> Upload | None:
        with self._session() as session:
            return session.get(Upload, upload_id)

    def claim(self, connection: Connection, upload_id: str, now: datetime) -> bool:
        """In the transaction that stores a job using the upload, after the job's INSERT: whether the
        upload is still there and unexpired, its row locked until that transaction ends, so that a
        removal waiting on it sees the job. (SQLite: the INSERT took the one write lock already.)"""
        query = select(col(Upload.id)).where(col(Upload.id) == upload_id, col(Upload.expires_at) > now)
        return connection.execute(query.with_for_update(read=True)).first() is not None

    def delete_unless_used(self, upload_id: str, *, expired_by: datetime | None = None) -> tuple[bool, list[str]]:
        """Delete the upload's row unless an unfinished job uses it (and, with `expired_by`, only if it
        expired by then): (deleted, the unfinished jobs that keep it). The caller removes the bytes
        once this has returned True (committed): never a row without its file."""
        with self.engine.begin() as connection:
            # PostgreSQL: wait for any create holding the row; the statements below then see its job
            # (READ COMMITTED reads afresh per statement). SQLite ignores FOR UPDATE: the DELETE below
            # is one statement under the single write lock.
            connection.execute(select(col(Upload.id)).where(col(Upload.id) == upload_id).with_for_update()).first()
            condition = [col(Upload.id) == upload_id, ~exists(self._unfinished_jobs_using(upload_id))]
            if expired_by is not None:
                condition.append(col(Upload.expires_at) <= expired_by)
            # Session.execute is typed as Result; a DELETE's is a CursorResult, which has the rowcount
            result = cast(CursorResult[Any], connection.execute(delete(Upload).where(*condition)))
            if result.rowcount:
                return True, []
            return False, list(connection.execute(self._unfinished_jobs_using(upload_id)).scalars())

    def expired(self, now: datetime, limit: int, after: tuple[datetime, str] | None = None) -> list[Upload]:
        """Uploads past their expiry, oldest first; `after`: the (expires_at, id) of the last one of
        the previous page, so that kept uploads (in use) never hide the ones behind them."""
        query = select(Upload).where(col(Upload.expires_at) <= now)
        if after is not None:
            query = query.where(
                or_(col(Upload.expires_at) > after[0], and_(col(Upload.expires_at) == after[0], col(Upload.id) > after[1]))
            )
        with self._session() as session:
            return list(session.exec(query.order_by(col(Upload.expires_at), col(Upload.id)).limit(limit)))

    @staticmethod
    def _unfinished_jobs_using(upload_id: str) -> SelectOfScalar[str]:
        """The ids of the unfinished jobs that animate this upload (`extra.sourceImage`)."""
        statuses = [status.value for status in UNFINISHED_STATUSES]
        return select(col(Job.id)).where(
            col(Job.status).in_(statuses), col(Job.provider) == "upload", Job.extra["sourceImage"].as_string() == upload_id
        )

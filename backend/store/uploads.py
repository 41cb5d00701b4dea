"""The `uploads` table and UploadStore: the pictures users uploaded (their bytes are in the MediaStore)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Column, Engine, and_, delete, or_
from sqlalchemy.engine import CursorResult
from sqlmodel import Field, Session, SQLModel, col, select

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

    def delete(self, upload_id: str) -> bool:
        with self._session() as session:
            # Session.execute is typed as Result; a DELETE's is a CursorResult, which has the rowcount
            result = cast(CursorResult[Any], session.execute(delete(Upload).where(col(Upload.id) == upload_id)))
            session.commit()
            return bool(result.rowcount)

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

    def unfinished_jobs_using(self, upload_id: str) -> list[str]:
        """The ids of the unfinished jobs that still have to take this upload (`extra.sourceImage`)."""
        statuses = [status.value for status in UNFINISHED_STATUSES]
        with self._session() as session:
            query = select(Job.id).where(
                col(Job.status).in_(statuses), col(Job.provider) == "upload", Job.extra["sourceImage"].as_string() == upload_id
            )
            return list(session.exec(query))

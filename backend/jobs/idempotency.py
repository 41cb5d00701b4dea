"""Idempotent creates: the `Idempotency-Key` of `POST /api/v1/generate` and `/batches` (Stripe's header).

The same key and the same request from the same user within KEY_HOURS answer the job the first
one made, and make nothing; the same key with another request is refused. The key's row is
inserted in the job's own transaction, under a primary key (owner, key): of two concurrent
creates with one key (on one instance or several sharing PostgreSQL) one commits, the other's
insert fails and it answers the winner's job instead. Removing the job frees its key.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from pydantic import BaseModel
from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from backend.errors import ApiError
from backend.store.models import IdempotencyKey, utcnow

#: How long a key answers with its job.
KEY_HOURS = 24
#: Longest key taken (Stripe's limit).
MAX_KEY_LENGTH = 255
HEADER = "Idempotency-Key"
#: Printable ASCII (what an HTTP header carries unchanged).
KEY_PATTERN = r"^[ -~]+$"
REPLAYED_HEADER = "Idempotent-Replayed"
IDEMPOTENCY_KEY_DOC = (
    f"Optional, 1-{MAX_KEY_LENGTH} printable characters: the same key and request within {KEY_HOURS} h answer the job "
    f"first made ({REPLAYED_HEADER}: true) and create nothing; the key with another request: 422 IDEMPOTENCY_KEY_REUSED."
)


class IdempotencyKeyReused(ApiError):
    status_code = 422
    code = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self, key: str, job_id: str):
        super().__init__(
            f"This {HEADER} was used with another request (job '{job_id}'): send a new key for a new job.",
            {"field": HEADER, "jobId": job_id},
        )


class IdempotencyKeyInvalid(ApiError):
    status_code = 422
    code = "VALIDATION_ERROR"

    def __init__(self) -> None:
        super().__init__(
            f"{HEADER}: 1 to {MAX_KEY_LENGTH} printable ASCII characters.", {"field": HEADER, "maxLength": MAX_KEY_LENGTH}
        )


class KeyTaken(Exception):
    """A concurrent create with the same key committed first (its insert won)."""


def check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= char <= "~" for char in key):
        raise IdempotencyKeyInvalid()
    return key


def request_hash(request: BaseModel) -> str:
    """The validated request's fingerprint: spacing, key order and spelled-out defaults do not change it."""
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()


def _owner(user_name: str | None) -> str:
    return user_name or ""


class IdempotencyKeys:
    def __init__(self, engine: Engine):
        self.engine = engine

    def job_for(self, user_name: str | None, key: str, request: BaseModel) -> str | None:
        """The id of the job this key made within KEY_HOURS (None: none); IdempotencyKeyReused when
        the key came with another request."""
        query = select(col(IdempotencyKey.request_hash), col(IdempotencyKey.job_id)).where(
            col(IdempotencyKey.owner) == _owner(user_name),
            col(IdempotencyKey.key) == key,
            col(IdempotencyKey.created_at) > utcnow() - timedelta(hours=KEY_HOURS),
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        if row is None:
            return None
        if row.request_hash != request_hash(request):
            raise IdempotencyKeyReused(key, row.job_id)
        return row.job_id

    def claim(self, connection: Connection, user_name: str | None, key: str, request: BaseModel, job_id: str) -> None:
        """Record the key for `job_id` in the job's transaction; KeyTaken when a concurrent create won
        (the transaction must then be rolled back: nothing of this job is kept)."""
        owner = _owner(user_name)
        expired = utcnow() - timedelta(hours=KEY_HOURS)
        connection.execute(
            delete(IdempotencyKey).where(
                col(IdempotencyKey.owner) == owner, col(IdempotencyKey.key) == key, col(IdempotencyKey.created_at) <= expired
            )
        )
        try:
            connection.execute(
                insert(IdempotencyKey).values(
                    owner=owner, key=key, request_hash=request_hash(request), job_id=job_id, created_at=utcnow()
                )
            )
        except IntegrityError:  # PostgreSQL waited for the other transaction to commit, then refused
            raise KeyTaken() from None

"""Idempotency keys of creates: one row per (owner, key), made in the job's own transaction.

Revision ID: 0008_idempotency
Revises: 0007_webhooks
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from backend.store.models import UtcDateTime

revision = "0008_idempotency"
down_revision = "0007_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("owner", "key"),
    )
    op.create_index("ix_idempotency_keys_job_id", "idempotency_keys", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_job_id", "idempotency_keys")
    op.drop_table("idempotency_keys")

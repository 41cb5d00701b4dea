"""Batches of jobs (POST /api/v1/batches): the batches table and each job's batch_id.

Revision ID: 0009_batches
Revises: 0008_idempotency
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from backend.store.models import UtcDateTime

revision = "0009_batches"
down_revision = "0008_idempotency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_batches_owner", "batches", ["owner"])
    op.add_column("jobs", sa.Column("batch_id", sa.String(length=64), nullable=True))
    op.create_index("ix_jobs_batch_id", "jobs", ["batch_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_batch_id", "jobs")
    with op.batch_alter_table("jobs") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("batch_id")
    op.drop_index("ix_batches_owner", "batches")
    op.drop_table("batches")

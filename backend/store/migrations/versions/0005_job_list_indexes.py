"""Indexes for the job list's pages: newest first within an owner, a status, or both.

The list reads one page ordered by (created_at, id). With an index on the filtered column alone
the database found every matching job and sorted them all to return twenty (35 ms for one
owner, 90 ms for "completed" at 100,000 jobs); an index that starts with the filtered columns
and goes on with the order returns the page in index order and stops after it. The old
single-column indexes are prefixes of the new ones: dropped, so each write updates fewer.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_owner_created", "jobs", ["owner", "created_at", "id"])
    op.create_index("ix_jobs_status_created", "jobs", ["status", "created_at", "id"])
    op.create_index("ix_jobs_owner_status_created", "jobs", ["owner", "status", "created_at", "id"])
    op.drop_index("ix_jobs_owner", "jobs")
    op.drop_index("ix_jobs_status", "jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_owner", "jobs", ["owner"])
    op.drop_index("ix_jobs_owner_status_created", "jobs")
    op.drop_index("ix_jobs_status_created", "jobs")
    op.drop_index("ix_jobs_owner_created", "jobs")

"""Erase requests: the erasures table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in tables.py: a migration must not change when the models do.
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("erase_id", sa.String(64), nullable=False),
        sa.Column("lead_hash", sa.String(64), nullable=False),
        sa.Column("requested_at", TIME, nullable=False),
        sa.Column("scores_erased_at", TIME, nullable=True),
        sa.Column("stage_changes_erased_at", TIME, nullable=True),
        sa.Column("completed_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("erase_id", name="pk_erasures"),
    )
    op.create_index("ix_erasures_lead_hash", "erasures", ["lead_hash"])


def downgrade() -> None:
    op.drop_index("ix_erasures_lead_hash", table_name="erasures")
    op.drop_table("erasures")

"""Change positions on leads, for the change-ordered listing (``?updated_after=``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Leads written before this revision share position 0: a first sync reads them all.
    # Plain ALTERs, no batch copy: SQLite adds (and, since 3.35, drops) a column in place,
    # and copying leads would cascade-delete the rows that reference it.
    op.add_column(
        "leads", sa.Column("change_position", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.create_index("ix_leads_change_position_lead_id", "leads", ["change_position", "lead_id"])
    counter = op.create_table(
        "change_positions",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_change_positions"),
    )
    op.bulk_insert(counter, [{"id": 1, "last": 0}])


def downgrade() -> None:
    op.drop_table("change_positions")
    op.drop_index("ix_leads_change_position_lead_id", table_name="leads")
    op.drop_column("leads", "change_position")

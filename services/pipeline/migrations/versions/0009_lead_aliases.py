"""Lead aliases: anonymous ids merged into a known lead (docs/architecture.md §5.12).

A new table only, nothing existing is altered. Merges the pipeline consumed before this
revision were not recorded: their anonymous rows stay until the anonymous id is erased.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "lead_aliases",
        sa.Column("alias_id", sa.String(), nullable=False),
        sa.Column("lead_id", sa.String(), nullable=False),
        sa.Column("merge_id", sa.String(), nullable=False),
        sa.Column("merged_at", TIME, nullable=False),
        sa.Column("recorded_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("alias_id", name="pk_lead_aliases"),
    )
    op.create_index("ix_lead_aliases_lead_id", "lead_aliases", ["lead_id"])


def downgrade() -> None:
    op.drop_index("ix_lead_aliases_lead_id", table_name="lead_aliases")
    op.drop_table("lead_aliases")

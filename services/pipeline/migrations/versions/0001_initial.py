"""The initial schema: leads, stage_changes, score_breakdowns.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in tables.py: a migration must not change when the models do.
TIME = sa.DateTime(timezone=True)
POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
STAGE = sa.String(16)


def upgrade() -> None:
    op.create_table(
        "leads",
        sa.Column("lead_id", sa.String(), nullable=False),
        sa.Column("stage", STAGE, nullable=False),
        sa.Column("fit", sa.Float(), nullable=False),
        sa.Column("engagement", sa.Float(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("as_of", TIME, nullable=True),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("score_sequence", sa.BigInteger(), nullable=True),
        sa.Column("change_sequence", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("lead_id", name="pk_leads"),
    )
    op.create_index("ix_leads_total_lead_id", "leads", [sa.text("total DESC"), "lead_id"])
    op.create_index(
        "ix_leads_stage_total_lead_id", "leads", ["stage", sa.text("total DESC"), "lead_id"]
    )
    op.create_table(
        "stage_changes",
        sa.Column("position", POSITION, autoincrement=True, nullable=False),
        sa.Column("lead_id", sa.String(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("change_id", sa.String(), nullable=False),
        sa.Column("from_stage", STAGE, nullable=True),
        sa.Column("to_stage", STAGE, nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("trigger_event_id", sa.String(), nullable=False),
        sa.Column("occurred_at", TIME, nullable=False),
        sa.Column("fit", sa.Float(), nullable=False),
        sa.Column("engagement", sa.Float(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("recorded_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_stage_changes"),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.lead_id"],
            name="fk_stage_changes_lead_id_leads",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("change_id", name="uq_stage_changes_change_id"),
        sa.UniqueConstraint("lead_id", "sequence", name="uq_stage_changes_lead_id_sequence"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "score_breakdowns",
        sa.Column("lead_id", sa.String(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("fit", sa.Float(), nullable=False),
        sa.Column("engagement", sa.Float(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("as_of", TIME, nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("breakdown", DOCUMENT, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("lead_id", name="pk_score_breakdowns"),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.lead_id"],
            name="fk_score_breakdowns_lead_id_leads",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("score_breakdowns")
    op.drop_table("stage_changes")
    op.drop_index("ix_leads_stage_total_lead_id", table_name="leads")
    op.drop_index("ix_leads_total_lead_id", table_name="leads")
    op.drop_table("leads")

"""What the analytics read: the source and end of each stay, one journey row per lead.

Existing rows are filled by the statements the pipeline keeps them with
(:mod:`services.pipeline.journeys`); changes recorded before this revision name no
source (the records did not carry one), so their leads fall under an unknown source.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.pipeline import journeys

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ALTERs, no batch copy (see 0003): a copy of stage_changes would renumber nothing
    # but cost a rewrite of the history.
    op.add_column("stage_changes", sa.Column("source", sa.String(256), nullable=True))
    op.add_column("stage_changes", sa.Column("left_at", TIME, nullable=True))
    op.create_index(
        "ix_stage_changes_occurred_at",
        "stage_changes",
        ["occurred_at", "to_stage", "from_stage", "left_at"],
    )
    op.create_table(
        "lead_journeys",
        sa.Column("lead_id", sa.String(), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("furthest", sa.Integer(), nullable=False),
        sa.Column("disqualified", sa.Boolean(), nullable=False),
        sa.Column("entered_at", TIME, nullable=True),
        sa.Column("source", sa.String(256), nullable=True),
        sa.Column("prospect_at", TIME, nullable=True),
        sa.Column("opportunity_at", TIME, nullable=True),
        sa.Column("customer_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.lead_id"],
            name="fk_lead_journeys_lead_id_leads",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("lead_id", name="pk_lead_journeys"),
    )
    op.create_index(
        "ix_lead_journeys_entered_at",
        "lead_journeys",
        ["entered_at", "furthest", "disqualified", "stage", "source"],
    )
    bind = op.get_bind()
    bind.execute(journeys.set_left_at(None))
    bind.execute(journeys.upsert_journeys(bind.dialect.name, None))


def downgrade() -> None:
    op.drop_index("ix_lead_journeys_entered_at", table_name="lead_journeys")
    op.drop_table("lead_journeys")
    op.drop_index("ix_stage_changes_occurred_at", table_name="stage_changes")
    op.drop_column("stage_changes", "left_at")
    op.drop_column("stage_changes", "source")

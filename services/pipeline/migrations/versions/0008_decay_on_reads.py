"""Engagement stored in the form that sorts alike at every moment (services/pipeline/decay.py).

Leads written before this revision get rate 0: they show the engagement of their latest
event until their next score update, which carries the model's half-life.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GROUP_COLUMNS = ["fit", "decay_rate", "decay_sign", "decay_log2", "lead_id"]


def upgrade() -> None:
    # Plain ALTERs, no batch copy (see 0003).
    op.add_column("leads", sa.Column("decay_rate", sa.Float(), server_default="0", nullable=False))
    op.add_column(
        "leads", sa.Column("decay_sign", sa.SmallInteger(), server_default="0", nullable=False)
    )
    op.add_column("leads", sa.Column("decay_log2", sa.Float(), server_default="0", nullable=False))
    # a rate-0 lead's current engagement is 2 ** log2 with the sign: fill them from the rows
    leads = sa.table(
        "leads",
        sa.column("engagement", sa.Float()),
        sa.column("decay_sign", sa.SmallInteger()),
        sa.column("decay_log2", sa.Float()),
    )
    op.execute(
        leads.update()
        .where(leads.c.engagement != 0)
        .values(decay_sign=sa.case((leads.c.engagement > 0, 1), else_=-1))
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE leads SET decay_log2 = log(2.0, abs(engagement)::numeric) WHERE engagement <> 0"
        )
    else:
        op.execute("UPDATE leads SET decay_log2 = 0 WHERE engagement <> 0")
        _fill_log2_in_python()
    op.create_index("ix_leads_decay_groups", "leads", GROUP_COLUMNS)
    op.create_index("ix_leads_stage_decay_groups", "leads", ["stage", *GROUP_COLUMNS])
    op.create_index("ix_leads_as_of", "leads", ["as_of"])


def _fill_log2_in_python() -> None:
    """SQLite builds without math functions have no log(): the rows go through Python."""
    import math

    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT lead_id, engagement FROM leads WHERE engagement <> 0"))
    for lead_id, engagement in rows.fetchall():
        bind.execute(
            sa.text("UPDATE leads SET decay_log2 = :log2 WHERE lead_id = :lead_id"),
            {"log2": math.log2(abs(engagement)), "lead_id": lead_id},
        )


def downgrade() -> None:
    op.drop_index("ix_leads_as_of", table_name="leads")
    op.drop_index("ix_leads_stage_decay_groups", table_name="leads")
    op.drop_index("ix_leads_decay_groups", table_name="leads")
    op.drop_column("leads", "decay_log2")
    op.drop_column("leads", "decay_sign")
    op.drop_column("leads", "decay_rate")

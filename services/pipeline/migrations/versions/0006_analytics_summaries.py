"""Exact summaries for the analytics over long ranges: counts per hour or day, the stay
columns and the journey spans velocity ranks.

Existing rows are filled by the statements the pipeline keeps them with
(:func:`services.pipeline.analytics_summaries.rebuild`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.pipeline import analytics_summaries

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)
STAGE = sa.String(16)


def _counts(name: str, *keys: sa.Column[object]) -> None:
    op.create_table(
        name,
        *keys,
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*(key.name for key in keys), name=f"pk_{name}"),
    )


def upgrade() -> None:
    op.add_column("stage_changes", sa.Column("stay_seconds", sa.Float(), nullable=True))
    op.add_column("stage_changes", sa.Column("stay_bucket", sa.Integer(), nullable=True))
    op.create_table(
        "journey_spans",
        sa.Column("lead_id", sa.String(), nullable=False),
        sa.Column("span", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("entered_at", TIME, nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.lead_id"],
            name="fk_journey_spans_lead_id_leads",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("lead_id", "span", name="pk_journey_spans"),
    )
    _counts(
        "stage_change_hours",
        sa.Column("hour", TIME, nullable=False),
        sa.Column("from_stage", STAGE, nullable=False),
        sa.Column("to_stage", STAGE, nullable=False),
    )
    _counts(
        "stage_change_days",
        sa.Column("day", TIME, nullable=False),
        sa.Column("from_stage", STAGE, nullable=False),
        sa.Column("to_stage", STAGE, nullable=False),
    )
    _counts(
        "funnel_days",
        sa.Column("day", TIME, nullable=False),
        sa.Column("stage", STAGE, nullable=False),
        sa.Column("furthest", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("disqualified", sa.Boolean(), nullable=False),
        sa.Column("has_source", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(256), nullable=False),
    )
    _counts(
        "stay_days",
        sa.Column("to_stage", STAGE, nullable=False),
        sa.Column("day", TIME, nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False, autoincrement=False),
    )
    _counts(
        "span_days",
        sa.Column("span", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("day", TIME, nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False, autoincrement=False),
    )
    bind = op.get_bind()
    for statement in analytics_summaries.rebuild_statements(bind.dialect.name):
        bind.execute(statement)
    # the indexes last: filling the columns first rewrites no index entries twice
    op.create_index(
        "ix_stage_changes_to_stage_stay_bucket",
        "stage_changes",
        ["to_stage", "stay_bucket", "stay_seconds", "occurred_at"],
    )
    op.create_index(
        "ix_stage_changes_to_stage_stay_bucket_occurred_at",
        "stage_changes",
        ["to_stage", "stay_bucket", "occurred_at", "stay_seconds"],
    )
    op.create_index(
        "ix_stage_changes_open_stays",
        "stage_changes",
        ["to_stage", "occurred_at"],
        postgresql_where=sa.text("left_at IS NULL"),
        sqlite_where=sa.text("left_at IS NULL"),
    )
    op.create_index(
        "ix_journey_spans_span_bucket",
        "journey_spans",
        ["span", "bucket", "seconds", "entered_at"],
    )
    op.create_index(
        "ix_journey_spans_span_bucket_entered_at",
        "journey_spans",
        ["span", "bucket", "entered_at", "seconds"],
    )


def downgrade() -> None:
    for name in (
        "span_days",
        "stay_days",
        "funnel_days",
        "stage_change_days",
        "stage_change_hours",
    ):
        op.drop_table(name)
    op.drop_index("ix_journey_spans_span_bucket_entered_at", table_name="journey_spans")
    op.drop_index("ix_journey_spans_span_bucket", table_name="journey_spans")
    op.drop_table("journey_spans")
    op.drop_index("ix_stage_changes_open_stays", table_name="stage_changes")
    op.drop_index("ix_stage_changes_to_stage_stay_bucket_occurred_at", table_name="stage_changes")
    op.drop_index("ix_stage_changes_to_stage_stay_bucket", table_name="stage_changes")
    op.drop_column("stage_changes", "stay_bucket")
    op.drop_column("stage_changes", "stay_seconds")

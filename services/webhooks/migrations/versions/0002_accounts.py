"""account.score_changed: account_sequences, account_notices.

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


def upgrade() -> None:
    op.create_table(
        "account_sequences",
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_sequences")),
    )
    op.create_table(
        "account_notices",
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.endpoint_id"],
            name=op.f("fk_account_notices_endpoint_id_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("endpoint_id", "account_id", name=op.f("pk_account_notices")),
    )


def downgrade() -> None:
    op.drop_table("account_notices")
    op.drop_table("account_sequences")

"""Accounts: each account's newest roll-up, and the contacts it lists.

New tables only, nothing existing is altered, so this revision does not depend on any
other but the analytics one it follows.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)
DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(256), nullable=False),
        sa.Column("name", sa.String(256), nullable=True),
        sa.Column("domain", sa.String(256), nullable=True),
        sa.Column("fit", sa.Float(), nullable=False),
        sa.Column("contacts", sa.Integer(), nullable=False),
        sa.Column("engaged_contacts", sa.Integer(), nullable=False),
        sa.Column("contact_total_sum", sa.Float(), nullable=False),
        sa.Column("contact_total_max", sa.Float(), nullable=True),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("as_of", TIME, nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("traits", DOCUMENT, nullable=False),
        sa.Column("breakdown", DOCUMENT, nullable=False),
        sa.Column("members_truncated", sa.Boolean(), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("change_position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="pk_accounts"),
    )
    op.create_index(
        "ix_accounts_total_account_id", "accounts", [sa.text("total DESC"), "account_id"]
    )
    op.create_index(
        "ix_accounts_change_position_account_id", "accounts", ["change_position", "account_id"]
    )
    op.create_table(
        "account_contacts",
        sa.Column("account_id", sa.String(256), nullable=False),
        sa.Column("lead_id", sa.String(), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("fit", sa.Float(), nullable=False),
        sa.Column("engagement", sa.Float(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("engaged", sa.Boolean(), nullable=False),
        sa.Column("account_sequence", sa.BigInteger(), nullable=False),
        sa.Column("claimed_position", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.account_id"],
            name="fk_account_contacts_account_id_accounts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "lead_id", name="pk_account_contacts"),
    )
    op.create_index(
        "ix_account_contacts_lead_id_claimed_position",
        "account_contacts",
        ["lead_id", "claimed_position"],
    )


def downgrade() -> None:
    op.drop_index("ix_account_contacts_lead_id_claimed_position", table_name="account_contacts")
    op.drop_table("account_contacts")
    op.drop_index("ix_accounts_change_position_account_id", table_name="accounts")
    op.drop_index("ix_accounts_total_account_id", table_name="accounts")
    op.drop_table("accounts")

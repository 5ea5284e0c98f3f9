"""Column types and constraint names every service's tables use, on PostgreSQL and SQLite.

Each service keeps its own tables and metadata (its own migrations); what they share is
how a time is stored, how a feed position is numbered and how constraints are named.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, DateTime, Dialect, Integer, TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Explicit constraint names, so later migrations can drop them on both databases."""


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on PostgreSQL (timestamptz) and SQLite (text).

    SQLite keeps no offset, so values come back naive; this puts UTC back,
    so the API never serves a time without its zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


Position = BigInteger().with_variant(Integer(), "sqlite")
"""64 bits on PostgreSQL; SQLite autoincrements only an ``INTEGER PRIMARY KEY`` (64 bits anyway)."""

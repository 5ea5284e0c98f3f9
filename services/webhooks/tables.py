"""The webhooks service's tables: endpoints, their messages, each message's attempts.

A message is one event for one endpoint, written in the same transaction as
the Kafka records it comes from are acknowledged for (offsets commit after it),
and unique per ``(endpoint_id, webhook_id)``: a record read twice after a crash
makes no second message. ``lead_totals`` and ``score_notices`` remember what the
score filters need across records; ``account_sequences`` and ``account_notices`` the same
for accounts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.sql_types import NAMING_CONVENTION, Position, UtcDateTime


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime(), str: String()}


class EndpointRow(Base):
    __tablename__ = "endpoints"

    endpoint_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(1024))
    event_types: Mapped[list[str]] = mapped_column(JSON)
    filters: Mapped[dict[str, Any]] = mapped_column(JSON)
    rate_limit: Mapped[float | None] = mapped_column(Float)
    concurrency: Mapped[int] = mapped_column(Integer)
    secret: Mapped[str] = mapped_column(doc="Sealed (see sealing.py).")
    previous_secret: Mapped[str | None]
    previous_secret_until: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class MessageRow(Base):
    __tablename__ = "messages"

    message_id: Mapped[int] = mapped_column(Position, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("endpoints.endpoint_id", ondelete="CASCADE")
    )
    webhook_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    lead_id: Mapped[str | None]
    body: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), doc="pending, delivered or failed")
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    last_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        Index("uq_messages_endpoint_id_webhook_id", "endpoint_id", "webhook_id", unique=True),
        Index("ix_messages_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_messages_endpoint_id_message_id", "endpoint_id", "message_id"),
        Index("ix_messages_lead_id", "lead_id"),  # erasing a lead
        {"sqlite_autoincrement": True},
    )


class AttemptRow(Base):
    __tablename__ = "attempts"

    attempt_id: Mapped[int] = mapped_column(Position, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("messages.message_id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(16), doc="success, failure or timeout")
    response_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(String(512))

    __table_args__ = ({"sqlite_autoincrement": True},)


class LeadTotalRow(Base):
    """A lead's newest total and the one before it: a redelivered record finds its own."""

    __tablename__ = "lead_totals"

    lead_id: Mapped[str] = mapped_column(primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Float)
    previous_total: Mapped[float | None] = mapped_column(Float)


class ScoreNoticeRow(Base):
    """The last total an endpoint was sent for a lead: what ``score_min_delta`` compares to."""

    __tablename__ = "score_notices"

    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("endpoints.endpoint_id", ondelete="CASCADE"), primary_key=True
    )
    lead_id: Mapped[str] = mapped_column(primary_key=True)
    total: Mapped[float] = mapped_column(Float)


class AccountSequenceRow(Base):
    """An account's newest record read: a redelivered or older one makes no message."""

    __tablename__ = "account_sequences"

    account_id: Mapped[str] = mapped_column(primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger)


class AccountNoticeRow(Base):
    """The last account total an endpoint was sent: ``account_score_min_delta``'s reference."""

    __tablename__ = "account_notices"

    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("endpoints.endpoint_id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[str] = mapped_column(primary_key=True)
    total: Mapped[float] = mapped_column(Float)

"""The pipeline's tables: each lead's current state, stage history and breakdown; erasures;
accounts and their contacts; aliases (anonymous ids merged into a lead).

Lead rows are written only by :func:`services.pipeline.store.record_batch`, which
keeps them idempotent on the records' identities (``lead_id`` + ``sequence``), and
deletes them when a lead is erased; erase requests are recorded by the erasure endpoint.
Account rows are written in the same transactions, by
:mod:`services.pipeline.accounts_store` (idempotent on ``account_id`` + ``sequence``).
The migration in ``migrations/versions`` creates exactly this schema; a test
compares the two on SQLite and PostgreSQL.
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
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.sql_types import NAMING_CONVENTION, Position, UtcDateTime

Document = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime(), str: String()}


class LeadRow(Base):
    """A lead's current stage and score: what ``GET /v1/leads`` serves.

    Stage and score come from the newest score update (``score_sequence``);
    until the first one arrives, from the newest stage change (which carries
    the score at the move), so a lead is never listed without a total. The two
    sequences are separate counters in scoring; see ``store`` for why.
    """

    __tablename__ = "leads"

    lead_id: Mapped[str] = mapped_column(primary_key=True)
    stage: Mapped[str] = mapped_column(String(16))
    fit: Mapped[float] = mapped_column(Float)
    engagement: Mapped[float] = mapped_column(Float)
    total: Mapped[float] = mapped_column(Float)
    as_of: Mapped[datetime | None] = mapped_column(
        doc="Latest event time of the score; null until the first score update."
    )
    model_version: Mapped[str]
    score_sequence: Mapped[int | None] = mapped_column(
        BigInteger, doc="Sequence of the newest score update applied; null before the first."
    )
    change_sequence: Mapped[int | None] = mapped_column(
        BigInteger, doc="Sequence of the newest stage change applied; null before the first."
    )
    updated_at: Mapped[datetime]
    change_position: Mapped[int] = mapped_column(
        BigInteger,
        server_default="0",
        doc=(
            "Position of the batch that last wrote this row (see ChangePositionRow): only "
            "grows, so a sync job paging ?updated_after= misses no change."
        ),
    )
    # engagement in the form that sorts alike at every moment (services/pipeline/decay.py)
    decay_rate: Mapped[float] = mapped_column(Float, server_default="0")
    decay_sign: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    decay_log2: Mapped[float] = mapped_column(Float, server_default="0")


# Serves ORDER BY total DESC, lead_id (the listing and its keyset cursor).
Index("ix_leads_total_lead_id", LeadRow.total.desc(), LeadRow.lead_id)
# Serve the listing valued at a moment: one range per (fit, rate, sign) group (lead_reads.py).
Index(
    "ix_leads_decay_groups",
    LeadRow.fit,
    LeadRow.decay_rate,
    LeadRow.decay_sign,
    LeadRow.decay_log2,
    LeadRow.lead_id,
)
Index(
    "ix_leads_stage_decay_groups",
    LeadRow.stage,
    LeadRow.fit,
    LeadRow.decay_rate,
    LeadRow.decay_sign,
    LeadRow.decay_log2,
    LeadRow.lead_id,
)
# The leads whose latest event is after the moment asked for (valued as stored).
Index("ix_leads_as_of", LeadRow.as_of)
# Serves the same listing filtered by stage, and the funnel's counts per stage.
Index("ix_leads_stage_total_lead_id", LeadRow.stage, LeadRow.total.desc(), LeadRow.lead_id)
# Serves the change-ordered listing (?updated_after=) and its keyset cursor.
Index("ix_leads_change_position_lead_id", LeadRow.change_position, LeadRow.lead_id)


class StageChangeRow(Base):
    """One stage change, recorded once: the history of a lead and the feed for CRMs.

    ``position`` is assigned when the row is recorded and only grows, so a CRM
    polling ``GET /v1/stage-changes?after=<position>`` sees every change once.
    """

    __tablename__ = "stage_changes"

    position: Mapped[int] = mapped_column(Position, primary_key=True, autoincrement=True)
    lead_id: Mapped[str] = mapped_column(ForeignKey("leads.lead_id", ondelete="CASCADE"))
    sequence: Mapped[int] = mapped_column(BigInteger)
    change_id: Mapped[str] = mapped_column(unique=True)
    from_stage: Mapped[str | None] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str]
    trigger_event_id: Mapped[str]
    occurred_at: Mapped[datetime]
    fit: Mapped[float] = mapped_column(Float)
    engagement: Mapped[float] = mapped_column(Float)
    total: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str]
    recorded_at: Mapped[datetime]
    source: Mapped[str | None] = mapped_column(
        String(256), doc="Source of the event that caused the change; null when it named none."
    )
    left_at: Mapped[datetime | None] = mapped_column(
        doc=(
            "When the lead left the stage this change put it in: the occurred_at of its next "
            "change by sequence; null while it is the newest (kept by journeys.refresh)."
        )
    )
    stay_seconds: Mapped[float | None] = mapped_column(
        Float, doc="left_at - occurred_at in seconds, never below zero; null while open."
    )
    stay_bucket: Mapped[int | None] = mapped_column(
        Integer, doc="Log-scale bucket of stay_seconds (analytics.stay_bucket); null while open."
    )

    # AUTOINCREMENT: SQLite never hands out a position again, even after the newest row is purged.
    __table_args__ = (UniqueConstraint("lead_id", "sequence"), {"sqlite_autoincrement": True})


# Serves the analytics over a time range: stays by when they began, changes by when they
# happened (time in stage, stage changes per interval); covering, so no heap visit.
Index(
    "ix_stage_changes_occurred_at",
    StageChangeRow.occurred_at,
    StageChangeRow.to_stage,
    StageChangeRow.from_stage,
    StageChangeRow.left_at,
)
# Serves a percentile of finished stays: ranking inside one bucket of one stage.
Index(
    "ix_stage_changes_to_stage_stay_bucket",
    StageChangeRow.to_stage,
    StageChangeRow.stay_bucket,
    StageChangeRow.stay_seconds,
    StageChangeRow.occurred_at,
)
# The same over a narrow range: the range's rows of one bucket, then sorted.
Index(
    "ix_stage_changes_to_stage_stay_bucket_occurred_at",
    StageChangeRow.to_stage,
    StageChangeRow.stay_bucket,
    StageChangeRow.occurred_at,
    StageChangeRow.stay_seconds,
)
# Serves a percentile of open stays: ranking by when they began, inside one day.
Index(
    "ix_stage_changes_open_stays",
    StageChangeRow.to_stage,
    StageChangeRow.occurred_at,
    postgresql_where=StageChangeRow.left_at.is_(None),
    sqlite_where=StageChangeRow.left_at.is_(None),
)


class LeadJourneyRow(Base):
    """How far and how fast one lead went through the funnel: what the analytics read.

    Derived only from the lead's row and its stage changes, and rewritten from them by
    :func:`services.pipeline.journeys.refresh` in the transaction of every batch that
    touches the lead, so it is never out of step with them. One narrow row per lead lets
    a date range select leads by when they entered without scanning the history.
    """

    __tablename__ = "lead_journeys"

    lead_id: Mapped[str] = mapped_column(
        ForeignKey("leads.lead_id", ondelete="CASCADE"), primary_key=True
    )
    stage: Mapped[str] = mapped_column(String(16), doc="The lead's stage now (leads.stage).")
    furthest: Mapped[int] = mapped_column(
        Integer, doc="Furthest forward stage ever seen: 0 lead ... 3 customer."
    )
    disqualified: Mapped[bool] = mapped_column(doc="Ever disqualified.")
    entered_at: Mapped[datetime | None] = mapped_column(
        doc="Earliest occurred_at of its stage changes; null while none is recorded."
    )
    source: Mapped[str | None] = mapped_column(
        String(256), doc="Source of its first stage change: the source that created it."
    )
    prospect_at: Mapped[datetime | None] = mapped_column(
        doc="Earliest change to prospect or a later forward stage."
    )
    opportunity_at: Mapped[datetime | None] = mapped_column(
        doc="Earliest change to opportunity or customer."
    )
    customer_at: Mapped[datetime | None] = mapped_column(doc="Earliest change to customer.")


# Serves every analytics query over leads that entered in a date range; covering.
Index(
    "ix_lead_journeys_entered_at",
    LeadJourneyRow.entered_at,
    LeadJourneyRow.furthest,
    LeadJourneyRow.disqualified,
    LeadJourneyRow.stage,
    LeadJourneyRow.source,
)


class JourneySpanRow(Base):
    """How long one lead took from one milestone to a later one: the durations velocity
    ranks. ``span`` indexes ``analytics_summaries.SPANS``; a row only once both are reached."""

    __tablename__ = "journey_spans"

    lead_id: Mapped[str] = mapped_column(
        ForeignKey("leads.lead_id", ondelete="CASCADE"), primary_key=True
    )
    span: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    entered_at: Mapped[datetime] = mapped_column(doc="The lead's entry time (lead_journeys).")
    seconds: Mapped[float] = mapped_column(Float, doc="Never below zero.")
    bucket: Mapped[int] = mapped_column(Integer, doc="analytics.stay_bucket of seconds.")


# Serves a percentile of one span: ranking inside one bucket.
Index(
    "ix_journey_spans_span_bucket",
    JourneySpanRow.span,
    JourneySpanRow.bucket,
    JourneySpanRow.seconds,
    JourneySpanRow.entered_at,
)
Index(
    "ix_journey_spans_span_bucket_entered_at",
    JourneySpanRow.span,
    JourneySpanRow.bucket,
    JourneySpanRow.entered_at,
    JourneySpanRow.seconds,
)


# --- summaries: exact counts per key, kept by analytics_summaries in each batch's
# transaction; a count may reach zero and its row stay (readers skip it).


class StageChangeHourRow(Base):
    """Stage changes per UTC hour of ``occurred_at`` and (from, to); '' is no from_stage."""

    __tablename__ = "stage_change_hours"

    hour: Mapped[datetime] = mapped_column(primary_key=True)
    from_stage: Mapped[str] = mapped_column(String(16), primary_key=True)
    to_stage: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class StageChangeDayRow(Base):
    """The same per UTC day: what day and week intervals read."""

    __tablename__ = "stage_change_days"

    day: Mapped[datetime] = mapped_column(primary_key=True)
    from_stage: Mapped[str] = mapped_column(String(16), primary_key=True)
    to_stage: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class FunnelDayRow(Base):
    """Leads per UTC day they entered and what the funnel groups by (lead_journeys);
    ``has_source`` false stands for a null source ('' then). Cohorts sum it by furthest."""

    __tablename__ = "funnel_days"

    day: Mapped[datetime] = mapped_column(primary_key=True)
    stage: Mapped[str] = mapped_column(String(16), primary_key=True)
    furthest: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    disqualified: Mapped[bool] = mapped_column(primary_key=True)
    has_source: Mapped[bool] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(256), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class StayDayRow(Base):
    """Stays per stage, UTC day they began and stay_bucket; bucket -1 holds the open ones."""

    __tablename__ = "stay_days"

    to_stage: Mapped[str] = mapped_column(String(16), primary_key=True)
    day: Mapped[datetime] = mapped_column(primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(BigInteger)


class SpanDayRow(Base):
    """Journey spans per span, UTC day the lead entered and bucket (journey_spans)."""

    __tablename__ = "span_days"

    span: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    day: Mapped[datetime] = mapped_column(primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(BigInteger)


class ChangePositionRow(Base):
    """The last change position handed out: one row, bumped once per written batch.

    A counter of its own rather than ``MAX(leads.change_position) + 1``, so a position is
    never handed out twice, even after the lead that held the newest one is erased.
    """

    __tablename__ = "change_positions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last: Mapped[int] = mapped_column(BigInteger)


class ScoreBreakdownRow(Base):
    """The per-rule breakdown of a lead's newest score update, with the numbers it explains.

    Kept apart from ``leads`` so the listing reads narrow rows; the score is
    copied here so the explanation always adds up to the total it sits next to.
    """

    __tablename__ = "score_breakdowns"

    lead_id: Mapped[str] = mapped_column(
        ForeignKey("leads.lead_id", ondelete="CASCADE"), primary_key=True
    )
    sequence: Mapped[int] = mapped_column(BigInteger)
    fit: Mapped[float] = mapped_column(Float)
    engagement: Mapped[float] = mapped_column(Float)
    total: Mapped[float] = mapped_column(Float)
    as_of: Mapped[datetime]
    model_version: Mapped[str]
    breakdown: Mapped[list[dict[str, Any]]] = mapped_column(Document)
    updated_at: Mapped[datetime]


class ErasureRow(Base):
    """One request to erase a lead, by its erase id; the lead is named only by a hash.

    After the erasure no table may hold the lead id, so the request keeps its SHA-256
    (:func:`services.pipeline.store.lead_hash`): enough to show the request was made and
    done, not to read the id back. Scoring signals the erasure on both topics the
    pipeline reads; the request is complete once both signals are recorded.
    """

    __tablename__ = "erasures"

    erase_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lead_hash: Mapped[str] = mapped_column(String(64), index=True)
    requested_at: Mapped[datetime]
    scores_erased_at: Mapped[datetime | None] = mapped_column(
        doc="When the tombstone on the scores arrived; null until then."
    )
    stage_changes_erased_at: Mapped[datetime | None] = mapped_column(
        doc="When the erasure signal on the stage changes arrived; null until then."
    )
    completed_at: Mapped[datetime | None] = mapped_column(
        doc="When both signals were recorded and the lead's rows deleted; null until then."
    )


class AccountRow(Base):
    """An account's newest roll-up (``leadflow.account-scores``): what ``GET /v1/accounts``
    serves. Written only when a record's ``sequence`` is greater than the stored one."""

    __tablename__ = "accounts"

    account_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    name: Mapped[str | None] = mapped_column(
        String(256), doc="The account's name trait (a group call's), when it has one."
    )
    domain: Mapped[str | None] = mapped_column(
        String(256), doc="The account's domain trait (domain or website), when it has one."
    )
    fit: Mapped[float] = mapped_column(Float, doc="Points of the account fit rules.")
    contacts: Mapped[int] = mapped_column(Integer)
    engaged_contacts: Mapped[int] = mapped_column(Integer)
    contact_total_sum: Mapped[float] = mapped_column(Float)
    contact_total_max: Mapped[float | None] = mapped_column(
        Float, doc="Null while the account has no contact."
    )
    total: Mapped[float] = mapped_column(Float)
    as_of: Mapped[datetime]
    model_version: Mapped[str]
    sequence: Mapped[int] = mapped_column(BigInteger)
    traits: Mapped[dict[str, Any]] = mapped_column(Document)
    breakdown: Mapped[list[dict[str, Any]]] = mapped_column(Document)
    members_truncated: Mapped[bool] = mapped_column(
        doc="The record listed only the highest-scoring contacts (scoring caps the list)."
    )
    updated_at: Mapped[datetime]
    change_position: Mapped[int] = mapped_column(
        BigInteger,
        doc="Position of the batch that last wrote this row, as leads.change_position.",
    )


# Serves ORDER BY total DESC, account_id (the listing and its keyset cursor).
Index("ix_accounts_total_account_id", AccountRow.total.desc(), AccountRow.account_id)
# Serves the change-ordered listing (?updated_after=) and its keyset cursor.
Index("ix_accounts_change_position_account_id", AccountRow.change_position, AccountRow.account_id)


class AccountContactRow(Base):
    """One contact as the newest roll-up of its account lists it, with the score it counts.

    Keyed by account and lead, so each account holds exactly what its own newest record
    says, whatever order records of different accounts arrive in. While a contact moves,
    the old account's record without it may arrive after the new account's with it;
    ``claimed_position`` (the batch position that first listed it under this account)
    lets reads show it under the newest claim only, so it appears under one account.
    No foreign key to ``leads``: the account may name a lead before its score arrives.
    """

    __tablename__ = "account_contacts"

    account_id: Mapped[str] = mapped_column(
        String(256), ForeignKey("accounts.account_id", ondelete="CASCADE")
    )
    lead_id: Mapped[str]
    stage: Mapped[str] = mapped_column(String(16))
    fit: Mapped[float] = mapped_column(Float)
    engagement: Mapped[float] = mapped_column(Float)
    total: Mapped[float] = mapped_column(Float)
    engaged: Mapped[bool]
    account_sequence: Mapped[int] = mapped_column(
        BigInteger, doc="Sequence of the account's newest record that listed the contact."
    )
    claimed_position: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (PrimaryKeyConstraint("account_id", "lead_id"),)


# Serves the newest claim of a lead (reads) and an erased lead's rows.
Index(
    "ix_account_contacts_lead_id_claimed_position",
    AccountContactRow.lead_id,
    AccountContactRow.claimed_position,
)


class LeadAliasRow(Base):
    """An anonymous id merged into a known lead (docs/architecture.md §5.12): the id now
    names that lead. Recorded from the score update the merge gives the known lead (its
    ``merged_from``), once per alias, by :mod:`services.pipeline.aliases`.

    No foreign key to ``leads``: the alias goes with its lead when the lead is erased, and
    a late record of the alias is refused by looking here, whichever row exists.
    """

    __tablename__ = "lead_aliases"

    alias_id: Mapped[str] = mapped_column(primary_key=True, doc="The anonymous id merged.")
    lead_id: Mapped[str] = mapped_column(doc="The known lead it was merged into.")
    merge_id: Mapped[str] = mapped_column(
        doc="The merge request's event id: the score update's trigger_event_id."
    )
    merged_at: Mapped[datetime] = mapped_column(
        doc=(
            "The merge's score update as_of: the known lead's latest event time with the "
            "anonymous lead's events folded in (the update carries no other time)."
        )
    )
    recorded_at: Mapped[datetime] = mapped_column(doc="When the pipeline recorded the merge.")


# Serves the merges of one lead (its history) and its erasure.
Index("ix_lead_aliases_lead_id", LeadAliasRow.lead_id)

"""Exact summaries of the analytics' rows, kept in step with them in every batch.

A summary holds counts per key (a UTC hour or day and a few columns); an answer over a
long range reads the whole hours or days from it and only the partial ones at the edges
from the rows themselves (:mod:`services.pipeline.analytics_ranks`,
:mod:`services.pipeline.analytics_queries`).

They are kept the way :mod:`~services.pipeline.journeys` keeps the derived rows: by
recomputing, for the leads a batch touches. :func:`withdraw` runs first in the batch's
transaction and subtracts what those leads' rows contribute (``count = count - n`` per
key); the batch then writes, erases and refreshes the derived rows; :func:`restore`
derives the stay and span columns and adds the leads' contributions back. An erased lead
is withdrawn and has nothing left to add. A count that reaches zero keeps its row (the
key will likely be used again; readers skip zeros). Batches hold the writers' lock
(PostgreSQL's advisory lock, SQLite's single writer), so no two batches interleave.
Migration 0006 fills the summaries of an existing database with the same statements.

Only stage changes feed the hour, day and stay summaries and the spans, so only leads
with new stage changes (or erased) are recomputed there; the funnel's counts follow the
lead's current stage too (a score update can move it), so the leads whose score update
brings another stage are too (:func:`services.pipeline.journeys.moved_by_scores`).
Cohorts are summed from the funnel's counts, which hold the furthest rank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any
from typing import cast as typed

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Select,
    Table,
    case,
    cast,
    delete,
    extract,
    func,
    literal_column,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.pipeline.analytics import STAY_BUCKET_BOUNDS
from services.pipeline.journeys import BATCH, Leads, among, bound_chunks, execute_bound
from services.pipeline.tables import (
    FunnelDayRow,
    JourneySpanRow,
    LeadJourneyRow,
    SpanDayRow,
    StageChangeDayRow,
    StageChangeHourRow,
    StageChangeRow,
    StayDayRow,
)
from shared.database import upsert_insert

CHANGES = typed(Table, StageChangeRow.__table__)
JOURNEYS = typed(Table, LeadJourneyRow.__table__)
SPAN_ROWS = typed(Table, JourneySpanRow.__table__)
HOURS = typed(Table, StageChangeHourRow.__table__)
DAYS = typed(Table, StageChangeDayRow.__table__)
FUNNEL_DAYS = typed(Table, FunnelDayRow.__table__)
STAY_DAYS = typed(Table, StayDayRow.__table__)
SPAN_DAYS = typed(Table, SpanDayRow.__table__)

SPANS = (
    ("entered_at", "prospect_at"),
    ("prospect_at", "opportunity_at"),
    ("opportunity_at", "customer_at"),
    ("entered_at", "customer_at"),
)
"""The spans velocity measures, by their index in ``journey_spans.span``."""

OPEN = -1
"""The ``stay_days`` bucket of the stays still open."""

_SQLITE_FORMATS = {"hour": "%Y-%m-%d %H:00:00.000000", "day": "%Y-%m-%d 00:00:00.000000"}
"""SQLite stores a time as this text (SQLAlchemy's format), so a key compares as one."""


def truncated(dialect: str, column: Any, unit: str) -> ColumnElement[Any]:
    """The start of the UTC hour or day holding ``column``, of the column's own type."""
    if dialect == "postgresql":
        return func.timezone("UTC", func.date_trunc(unit, func.timezone("UTC", column)))
    return func.strftime(_SQLITE_FORMATS[unit], column)


def _double(value: float) -> ColumnElement[float]:
    """A double written into the statement (the same on both databases: ``repr`` reads
    back as the same double), rather than a parameter PostgreSQL may take for text."""
    return literal_column(f"CAST({value!r} AS DOUBLE PRECISION)", Float())


def _integer(value: int) -> ColumnElement[int]:
    return literal_column(str(value), Integer())


def seconds_between(dialect: str, earlier: Any, later: Any) -> ColumnElement[float]:
    """Seconds from ``earlier`` to ``later``, never below zero, rounded once to a double
    (as Python's ``timedelta.total_seconds`` rounds), so answers equal on both databases."""
    if dialect == "postgresql":
        exact: ColumnElement[Any] = extract("epoch", later - earlier)
    else:
        # SQLite keeps a time as text with six digits of microseconds: whole seconds
        # and microseconds apart, so the difference is an exact integer before dividing.
        def whole(column: Any) -> ColumnElement[Any]:
            return cast(func.strftime("%s", column), Integer())

        def micro(column: Any) -> ColumnElement[Any]:
            return cast(func.substr(column, 21, 6), Integer())

        micros = (whole(later) - whole(earlier)) * _integer(1_000_000) + (
            micro(later) - micro(earlier)
        )
        exact = micros / _double(1_000_000.0)
    return case((later < earlier, _double(0.0)), else_=cast(exact, Float()))


def bucket_of(seconds: ColumnElement[float]) -> ColumnElement[int]:
    """:func:`services.pipeline.analytics.stay_bucket` in SQL over the same bounds, as a
    binary search: a handful of comparisons a row rather than one per bound."""

    def within(low: int, high: int) -> ColumnElement[int]:  # the bucket is in [low, high]
        if low == high:
            return _integer(low)
        middle = (low + high) // 2
        below = seconds < _double(STAY_BUCKET_BOUNDS[middle])
        return case((below, within(low, middle)), else_=within(middle + 1, high))

    return within(0, len(STAY_BUCKET_BOUNDS))


# --- derived columns and rows -----------------------------------------------------------


def set_stays(dialect: str, lead_ids: Leads) -> Any:
    """UPDATE each stay's seconds and bucket from its ``left_at`` (NULL while open), where
    they differ: one statement, the bucket computed from the same seconds expression."""
    c = CHANGES.c
    open_ = c.left_at.is_(None)
    seconds = seconds_between(dialect, c.occurred_at, c.left_at)
    finished = case((open_, None), else_=seconds)
    bucket = case((open_, None), else_=bucket_of(seconds))
    statement = update(CHANGES).values(stay_seconds=finished, stay_bucket=bucket)
    differs = c.stay_seconds.is_distinct_from(finished) | (c.stay_bucket.is_(None) != open_)
    if lead_ids is None:
        return statement.where(differs)
    return statement.where(among(c.lead_id, lead_ids), differs)


def span_rows(dialect: str, lead_ids: Leads) -> Any:
    """SELECT of the spans of ``lead_ids`` (every lead when ``None``) from their journeys."""
    j = JOURNEYS.c
    parts = []
    for index, (earlier, later) in enumerate(SPANS):
        part = select(
            j.lead_id,
            _integer(index).label("span"),
            j.entered_at,
            seconds_between(dialect, j[earlier], j[later]).label("seconds"),
        ).where(j[later].is_not(None), j[earlier].is_not(None), j.entered_at.is_not(None))
        if lead_ids is not None:
            part = part.where(among(j.lead_id, lead_ids))
        parts.append(part)
    spans = union_all(*parts).subquery("spans")
    return select(*spans.c, bucket_of(spans.c.seconds).label("bucket"))


async def refresh_spans(session: AsyncSession, dialect: str, lead_ids: Sequence[str]) -> None:
    """Rewrite the spans of ``lead_ids`` from their (already refreshed) journeys."""
    for chunk in bound_chunks(lead_ids):
        await execute_bound(session, _batch_delete_spans(dialect), chunk)
        await execute_bound(session, _batch_insert_spans(dialect), chunk)


@cache
def _batch_delete_spans(dialect: str) -> Any:
    return delete(SPAN_ROWS).where(among(SPAN_ROWS.c.lead_id, BATCH))


@cache
def _batch_insert_spans(dialect: str) -> Any:
    return insert_spans(dialect, BATCH)


@cache
def _batch_set_stays(dialect: str) -> Any:
    return set_stays(dialect, BATCH)


@cache
def _batch_contribute(dialect: str, summary: Summary, sign: int) -> Any:
    return contribute(dialect, summary, BATCH, sign)


def insert_spans(dialect: str, lead_ids: Leads) -> Any:
    columns = ["lead_id", "span", "entered_at", "seconds", "bucket"]
    return upsert_insert(dialect, SPAN_ROWS).from_select(columns, span_rows(dialect, lead_ids))


# --- the summaries ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    """Counts per key of the rows ``rows`` selects, one row per counted row, each column
    named as the summary's key column it is counted under."""

    table: Table
    source: Table
    rows: Callable[[str], Select[Any]]
    follows_changes: bool
    """Only stage changes move it: recomputed for the leads that got some."""


def _change_rows(unit: str) -> Callable[[str], Select[Any]]:
    def rows(dialect: str) -> Select[Any]:
        c = CHANGES.c
        return select(
            truncated(dialect, c.occurred_at, unit).label(unit),
            func.coalesce(c.from_stage, "").label("from_stage"),
            c.to_stage,
        )

    return rows


def _funnel_rows(dialect: str) -> Select[Any]:
    j = JOURNEYS.c
    return select(
        truncated(dialect, j.entered_at, "day").label("day"),
        j.stage,
        j.furthest,
        j.disqualified,
        j.source.is_not(None).label("has_source"),
        func.coalesce(j.source, "").label("source"),
    ).where(j.entered_at.is_not(None))


def _stay_rows(dialect: str) -> Select[Any]:
    c = CHANGES.c
    day = truncated(dialect, c.occurred_at, "day").label("day")
    return select(c.to_stage, day, func.coalesce(c.stay_bucket, _integer(OPEN)).label("bucket"))


def _span_rows(dialect: str) -> Select[Any]:
    s = SPAN_ROWS.c
    return select(s.span, truncated(dialect, s.entered_at, "day").label("day"), s.bucket)


SUMMARIES = (
    Summary(HOURS, CHANGES, _change_rows("hour"), follows_changes=True),
    Summary(DAYS, CHANGES, _change_rows("day"), follows_changes=True),
    Summary(FUNNEL_DAYS, JOURNEYS, _funnel_rows, follows_changes=False),
    Summary(STAY_DAYS, CHANGES, _stay_rows, follows_changes=True),
    Summary(SPAN_DAYS, SPAN_ROWS, _span_rows, follows_changes=True),
)


def contribute(dialect: str, summary: Summary, lead_ids: Leads, sign: int) -> Any:
    """Add (``sign`` 1) or subtract (-1) what the rows of ``lead_ids`` (every lead when
    ``None``) count in ``summary``: one INSERT ... SELECT ... GROUP BY ... ON CONFLICT."""
    rows = summary.rows(dialect)
    if lead_ids is not None:
        rows = rows.where(among(summary.source.c.lead_id, lead_ids))
    keyed = rows.subquery("counted")
    keys = [column.name for column in summary.table.primary_key.columns]
    grouped = (
        select(*(keyed.c[k] for k in keys), (func.count() * sign).label("count"))
        .where(true())  # SQLite: INSERT ... SELECT ... ON CONFLICT needs a WHERE
        .group_by(*(keyed.c[k] for k in keys))
    )
    statement = upsert_insert(dialect, summary.table).from_select([*keys, "count"], grouped)
    return statement.on_conflict_do_update(
        index_elements=[summary.table.c[k] for k in keys],
        set_={"count": summary.table.c["count"] + statement.excluded["count"]},
    )


async def _apply(
    session: AsyncSession, leads: Iterable[str], changed: Iterable[str], sign: int
) -> None:
    dialect = session.get_bind().dialect.name
    everyone = sorted(set(leads) | set(changed))
    grown = sorted(set(changed))
    for summary in SUMMARIES:
        ids = grown if summary.follows_changes else everyone
        statement = _batch_contribute(dialect, summary, sign)
        for chunk in bound_chunks(ids):
            await execute_bound(session, statement, chunk)


async def withdraw(session: AsyncSession, leads: Iterable[str], changed: Iterable[str]) -> None:
    """First in a batch: subtract what ``leads`` count now (``changed``: those that will
    get stage changes or be erased)."""
    await _apply(session, leads, changed, -1)


async def restore(session: AsyncSession, leads: Iterable[str], changed: Iterable[str]) -> None:
    """Last in a batch, after :func:`services.pipeline.journeys.refresh`: derive the stay
    columns and spans of ``changed``, and add back what ``leads`` count now."""
    dialect = session.get_bind().dialect.name
    grown = sorted(set(changed))
    for chunk in bound_chunks(grown):
        await execute_bound(session, _batch_set_stays(dialect), chunk)
    await refresh_spans(session, dialect, grown)
    await _apply(session, leads, changed, 1)


def rebuild_statements(dialect: str, *, stays: bool = True) -> list[Any]:
    """Every stay column (unless ``stays`` is false: a bulk load that wrote them), span
    and summary recomputed over every lead, in order (migration 0006, a bulk load)."""
    statements = [set_stays(dialect, None)] if stays else []
    statements += [delete(SPAN_ROWS), insert_spans(dialect, None)]
    for summary in SUMMARIES:
        statements += [delete(summary.table), contribute(dialect, summary, None, 1)]
    return statements


async def rebuild(session: AsyncSession) -> None:
    for statement in rebuild_statements(session.get_bind().dialect.name):
        await session.execute(statement)

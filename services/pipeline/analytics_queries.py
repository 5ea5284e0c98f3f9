"""The SQL of the funnel analytics, over the derived rows :mod:`~services.pipeline.journeys`
keeps: ``lead_journeys`` (one row per lead) and ``stage_changes`` with its ``left_at``.

Counts are grouped in SQL on both databases. Percentiles are ``percentile_disc`` on
PostgreSQL; SQLite has none, so there the durations are read and ranked in Python by
:func:`services.pipeline.analytics.nearest_rank`, the same nearest-rank definition.
Each answer is one statement, so its numbers come from one snapshot.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, case, extract, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.pipeline.analytics import (
    FORWARD_STAGES,
    LATER_STAGES,
    MEDIAN,
    P90,
    Interval,
    LeadCount,
    Period,
    Spread,
    TimeRange,
    funnel_of,
    stay_seconds,
)
from services.pipeline.analytics_models import (
    ChangeBucket,
    Cohort,
    Cohorts,
    DurationSpread,
    Journey,
    Reached,
    StageChangeCounts,
    StageTime,
    TimeInStage,
    Transition,
    Velocity,
    VelocityStep,
)
from services.pipeline.api_models import Funnel
from services.pipeline.journeys import FORWARD_RANKS, REACHED_COLUMNS
from services.pipeline.tables import LeadJourneyRow, StageChangeRow
from shared.events import Stage
from shared.sql_types import UtcDateTime

JOURNEYS = cast(Table, LeadJourneyRow.__table__)
CHANGES = cast(Table, StageChangeRow.__table__)
DAY_SECONDS = 86400.0

_SQLITE_STARTS = {
    "hour": ("%Y-%m-%d %H:00:00",),
    "day": ("%Y-%m-%d 00:00:00",),
    "week": ("%Y-%m-%d 00:00:00", "weekday 0", "-6 days"),  # on to Sunday, back to Monday
    "month": ("%Y-%m-01 00:00:00",),
}


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _in_range(column: Any, window: TimeRange) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if window.start is not None:
        conditions.append(column >= window.start)
    if window.end is not None:
        conditions.append(column < window.end)
    return conditions


def _start_of(dialect: str, column: Any, unit: Period | Interval) -> ColumnElement[Any]:
    """The start (UTC) of the unit holding ``column``, as the database spells it."""
    if dialect == "postgresql":
        return func.date_trunc(unit.value, func.timezone("UTC", column))
    fmt, *modifiers = _SQLITE_STARTS[unit.value]
    return func.strftime(fmt, column, *modifiers)


def _as_utc(value: datetime | str) -> datetime:
    """A start read back: PostgreSQL gives a naive UTC datetime, SQLite text."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC)


def _seconds(later: Any, earlier: Any) -> ColumnElement[Any]:
    """PostgreSQL: seconds from ``earlier`` to ``later``, never below zero; NULL when either
    is (GREATEST would turn it into 0, and percentile_disc would count it)."""
    return case((later < earlier, literal(0)), else_=extract("epoch", later - earlier))


def _number(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


# --- the funnel ------------------------------------------------------------------------


async def funnel(session: AsyncSession, window: TimeRange, *, by_source: bool) -> Funnel:
    """The funnel of the leads that entered in ``window`` (every lead when unbounded)."""
    j = JOURNEYS.c
    query = (
        select(j.stage, j.furthest, j.disqualified, j.source, func.count())
        .where(*_in_range(j.entered_at, window))
        .group_by(j.stage, j.furthest, j.disqualified, j.source)
    )
    rows = (await session.execute(query)).all()
    counts = [
        LeadCount(Stage(stage), furthest, bool(dq), source, count)
        for stage, furthest, dq, source, count in rows
    ]
    return funnel_of(counts, by_source=by_source)


# --- time in stage ---------------------------------------------------------------------


async def time_in_stage(session: AsyncSession, window: TimeRange, as_of: datetime) -> TimeInStage:
    """Median and p90 of the stays that began in ``window``, finished and open apart."""
    spreads: dict[tuple[str, bool], Spread] = {}
    c = CHANGES.c
    began = _in_range(c.occurred_at, window)
    if _dialect(session) == "postgresql":
        ended = func.coalesce(c.left_at, literal(as_of, UtcDateTime()))
        seconds = _seconds(ended, c.occurred_at)
        is_open = c.left_at.is_(None)
        query = (
            select(
                c.to_stage,
                is_open,
                func.count(),
                func.percentile_disc(MEDIAN).within_group(seconds),
                func.percentile_disc(P90).within_group(seconds),
            )
            .where(*began)
            .group_by(c.to_stage, is_open)
        )
        for stage, still_open, count, median, p90 in (await session.execute(query)).all():
            spreads[stage, bool(still_open)] = Spread(count, _number(median), _number(p90))
    else:
        durations: dict[tuple[str, bool], list[float]] = defaultdict(list)
        query_rows = select(c.to_stage, c.occurred_at, c.left_at).where(*began)
        for stage, entered, left in (await session.execute(query_rows)).all():
            end = as_of if left is None else left
            durations[stage, left is None].append(stay_seconds(entered, end))
        spreads = {key: Spread.of(values) for key, values in durations.items()}

    def spread(stage: Stage, still_open: bool) -> DurationSpread:
        found = spreads.get((stage.value, still_open), Spread(0, None, None))
        return DurationSpread(count=found.count, median_seconds=found.median, p90_seconds=found.p90)

    return TimeInStage(
        from_=window.start,
        to=window.end,
        as_of=as_of,
        stages=[StageTime(stage=s, finished=spread(s, False), open=spread(s, True)) for s in Stage],
    )


# --- velocity --------------------------------------------------------------------------

_MILESTONES = ("entered_at", *REACHED_COLUMNS.values())
"""When a lead reached each forward stage, in funnel order (entering is reaching lead)."""


async def velocity(session: AsyncSession, window: TimeRange) -> Velocity:
    """Days between reaching consecutive forward stages, of the leads that entered in
    ``window``; a step counts the leads that reached its later stage."""
    j = JOURNEYS.c
    spans = [*pairwise(_MILESTONES), ("entered_at", "customer_at")]
    entered = [j.entered_at.is_not(None), *_in_range(j.entered_at, window)]
    spreads: list[Spread]
    if _dialect(session) == "postgresql":
        columns: list[Any] = []
        for earlier, later in spans:
            seconds = _seconds(j[later], j[earlier])
            columns += [
                func.count(j[later]),
                func.percentile_disc(MEDIAN).within_group(seconds),
                func.percentile_disc(P90).within_group(seconds),
            ]
        row = (await session.execute(select(*columns).where(*entered))).one()
        spreads = [
            Spread(row[3 * i], _number(row[3 * i + 1]), _number(row[3 * i + 2]))
            for i in range(len(spans))
        ]
    else:
        durations: list[list[float]] = [[] for _ in spans]
        rows = (await session.execute(select(*(j[m] for m in _MILESTONES)).where(*entered))).all()
        for row in rows:
            times = dict(zip(_MILESTONES, row, strict=True))
            for index, (earlier, later) in enumerate(spans):
                if times[later] is not None:
                    durations[index].append(stay_seconds(times[earlier], times[later]))
        spreads = [Spread.of(values) for values in durations]

    def days(value: float | None) -> float | None:
        return None if value is None else value / DAY_SECONDS

    steps = [
        VelocityStep(
            from_stage=a,
            to_stage=b,
            leads=spread.count,
            median_days=days(spread.median),
            p90_days=days(spread.p90),
        )
        for (a, b), spread in zip(pairwise(FORWARD_STAGES), spreads, strict=False)
    ]
    whole = spreads[-1]
    return Velocity(
        from_=window.start,
        to=window.end,
        steps=steps,
        lead_to_customer=Journey(
            leads=whole.count, median_days=days(whole.median), p90_days=days(whole.p90)
        ),
    )


# --- cohorts ---------------------------------------------------------------------------


async def cohorts(session: AsyncSession, window: TimeRange, period: Period) -> Cohorts:
    """Leads that entered in ``window``, by the period they entered in, and the share of
    each cohort that reached each later stage."""
    j = JOURNEYS.c
    start = _start_of(_dialect(session), j.entered_at, period).label("start")
    query: Select[Any] = (
        select(start, j.furthest, func.count())
        .where(j.entered_at.is_not(None), *_in_range(j.entered_at, window))
        .group_by(start, j.furthest)
    )
    per_period: dict[date, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for began, furthest, count in (await session.execute(query)).all():
        per_period[_as_utc(began).date()][furthest] += count
    table = []
    for day in sorted(per_period):
        by_rank = per_period[day]
        leads = sum(by_rank.values())

        def reached(stage: Stage, by_rank: dict[int, int] = by_rank, leads: int = leads) -> Reached:
            got = sum(n for rank, n in by_rank.items() if rank >= FORWARD_RANKS[stage])
            return Reached(leads=got, share=got / leads)

        table.append(Cohort(start=day, leads=leads, reached={s: reached(s) for s in LATER_STAGES}))
    return Cohorts(
        from_=window.start,
        to=window.end,
        period=period,
        stages=list(LATER_STAGES),
        cohorts=table,
    )


# --- stage changes over time -----------------------------------------------------------


def _stage_order(stage: Stage | None) -> int:
    """Funnel order, the creating change (no from_stage) first."""
    return -1 if stage is None else list(Stage).index(stage)


async def stage_changes(
    session: AsyncSession, window: TimeRange, interval: Interval
) -> StageChangeCounts:
    """Stage changes that happened in ``window``, per interval and per (from, to)."""
    c = CHANGES.c
    start = _start_of(_dialect(session), c.occurred_at, interval).label("start")
    query: Select[Any] = (
        select(start, c.from_stage, c.to_stage, func.count())
        .where(*_in_range(c.occurred_at, window))
        .group_by(start, c.from_stage, c.to_stage)
    )
    buckets: dict[datetime, list[Transition]] = defaultdict(list)
    for began, from_stage, to_stage, count in (await session.execute(query)).all():
        buckets[_as_utc(began)].append(
            Transition(from_stage=from_stage, to_stage=to_stage, count=count)
        )
    answer = []
    for moment in sorted(buckets):
        transitions = sorted(
            buckets[moment],
            key=lambda t: (-t.count, _stage_order(t.from_stage), _stage_order(t.to_stage)),
        )
        answer.append(
            ChangeBucket(
                start=moment, total=sum(t.count for t in transitions), transitions=transitions
            )
        )
    return StageChangeCounts(from_=window.start, to=window.end, interval=interval, buckets=answer)

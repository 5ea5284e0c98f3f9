"""The SQL of the funnel analytics, over the derived rows :mod:`~services.pipeline.journeys`
keeps (``lead_journeys``, ``stage_changes.left_at``) and the summaries
:mod:`~services.pipeline.analytics_summaries` keeps of them.

A range is cut into the whole hours or days inside it, counted from a summary, and the
partial ones at its edges, counted from the rows (:func:`~services.pipeline.analytics.
split_window`); percentiles come from bucket counts and one ranking query
(:mod:`~services.pipeline.analytics_ranks`). The same statements run on both databases.
An answer takes a few statements (its ranks in one); on PostgreSQL they read one snapshot.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from itertools import pairwise
from typing import Any, cast

from sqlalchemy import ColumnElement, DateTime, Select, Table, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from services.pipeline import analytics_ranks as ranks
from services.pipeline.analytics import (
    FORWARD_STAGES,
    LATER_STAGES,
    ChangeKey,
    Interval,
    LeadCount,
    Period,
    Spread,
    TimeRange,
    change_buckets,
    funnel_of,
    split_window,
)
from services.pipeline.analytics_models import (
    Cohort,
    Cohorts,
    DurationSpread,
    Journey,
    Reached,
    StageTime,
    TimeInStage,
    Velocity,
    VelocityStep,
)
from services.pipeline.analytics_summaries import DAYS, FUNNEL_DAYS, HOURS, SPANS
from services.pipeline.api_models import Funnel
from services.pipeline.journeys import FORWARD_RANKS
from services.pipeline.tables import LeadJourneyRow, StageChangeRow
from shared.events import Stage, format_time

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


async def _snapshot(session: AsyncSession) -> None:
    """An answer takes several statements: on PostgreSQL, they read one snapshot."""
    if _dialect(session) == "postgresql" and not session.in_transaction():
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


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
    """A start read back: PostgreSQL gives a UTC datetime (naive from ``date_trunc``),
    SQLite text or a naive datetime."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- the funnel ------------------------------------------------------------------------


async def funnel(session: AsyncSession, window: TimeRange, *, by_source: bool) -> Funnel:
    """The funnel of the leads that entered in ``window`` (every lead when unbounded)."""
    await _snapshot(session)
    whole, edges = split_window(window, Interval.DAY)
    parts: list[Select[Any]] = []
    if whole is not None:
        f = FUNNEL_DAYS.c
        keys = (f.stage, f.furthest, f.disqualified, f.has_source, f.source)
        parts.append(
            select(*keys, func.sum(f["count"]))
            .where(f["count"] != 0, *_in_range(f.day, whole))
            .group_by(*keys)
        )
    j = JOURNEYS.c
    ranges = [*(_in_range(j.entered_at, edge) for edge in edges)]
    if not window.bounded:  # leads with no stage change yet count only here
        ranges.append([j.entered_at.is_(None)])
    for conditions in ranges:
        raw = (j.stage, j.furthest, j.disqualified, j.source.is_not(None), j.source)
        parts.append(select(*raw, func.count()).where(*conditions).group_by(*raw))
    counts = []
    for part in parts:
        for stage, furthest, dq, has_source, source, count in (await session.execute(part)).all():
            counts.append(
                LeadCount(Stage(stage), furthest, bool(dq), source if has_source else None, count)
            )
    return funnel_of(counts, by_source=by_source)


# --- time in stage ---------------------------------------------------------------------


async def time_in_stage(session: AsyncSession, window: TimeRange, as_of: datetime) -> TimeInStage:
    """Median and p90 of the stays that began in ``window``, finished and open apart."""
    await _snapshot(session)
    stages = [stage.value for stage in Stage]
    spreads: dict[tuple[str, bool], Spread] = {
        (stage, False): found
        for stage, found in (
            await ranks.spreads(session, ranks.FINISHED_STAYS, window, stages)
        ).items()
    }
    open_days = await ranks.open_day_counts(session, window)
    for stage, found in (
        await ranks.open_spreads(session, window, open_days, stages, as_of)
    ).items():
        spreads[stage, True] = found

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


async def velocity(session: AsyncSession, window: TimeRange) -> Velocity:
    """Days between reaching consecutive forward stages, of the leads that entered in
    ``window``; a step counts the leads that reached its later stage."""
    await _snapshot(session)
    found = await ranks.spreads(session, ranks.SPANS, window, range(len(SPANS)))
    spreads = [found[index] for index in range(len(SPANS))]

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
    await _snapshot(session)
    dialect = _dialect(session)
    whole, edges = split_window(window, Interval.DAY)
    parts: list[Select[Any]] = []
    if whole is not None:
        d = FUNNEL_DAYS.c
        start = _start_of(dialect, d.day, period).label("start")
        parts.append(
            select(start, d.furthest, func.sum(d["count"]))
            .where(d["count"] != 0, *_in_range(d.day, whole))
            .group_by(start, d.furthest)
        )
    j = JOURNEYS.c
    for edge in edges:
        start = _start_of(dialect, j.entered_at, period).label("start")
        parts.append(
            select(start, j.furthest, func.count())
            .where(j.entered_at.is_not(None), *_in_range(j.entered_at, edge))
            .group_by(start, j.furthest)
        )
    per_period: dict[date, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for part in parts:
        for began, furthest, count in (await session.execute(part)).all():
            per_period[_as_utc(began).date()][furthest] += int(count)
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


async def stage_changes(
    session: AsyncSession, window: TimeRange, interval: Interval
) -> dict[str, Any]:
    """Stage changes that happened in ``window``, per interval and per (from, to): the JSON
    document :class:`~services.pipeline.analytics_models.StageChangeCounts` describes."""
    await _snapshot(session)
    dialect = _dialect(session)
    # hours for hourly counts, days for the rest: the fewest summary rows
    unit, summary = (Interval.HOUR, HOURS) if interval == Interval.HOUR else (Interval.DAY, DAYS)
    whole, edges = split_window(window, unit)
    parts: list[Select[Any]] = []
    if whole is not None:
        h = summary.c
        key = h[unit.value]
        conditions = (h["count"] != 0, *_in_range(key, whole))
        if interval == unit:  # one summary row per answer's row: read them as they are
            # (the plain type: each distinct start is made UTC once below, not each row)
            raw = type_coerce(key, DateTime()).label("start")
            parts.append(select(raw, h.from_stage, h.to_stage, h["count"]).where(*conditions))
        else:
            start = _start_of(dialect, key, interval).label("start")
            parts.append(
                select(start, h.from_stage, h.to_stage, func.sum(h["count"]))
                .where(*conditions)
                .group_by(start, h.from_stage, h.to_stage)
            )
    c = CHANGES.c
    for edge in edges:
        start = _start_of(dialect, c.occurred_at, interval).label("start")
        parts.append(
            select(start, c.from_stage, c.to_stage, func.count())
            .where(*_in_range(c.occurred_at, edge))
            .group_by(start, c.from_stage, c.to_stage)
        )
    counts: Counter[ChangeKey] = Counter()
    starts: dict[Any, datetime] = {}
    for part in parts:
        for began, from_stage, to_stage, count in (await session.execute(part)).all():
            moment = starts.get(began) or starts.setdefault(began, _as_utc(began))
            counts[moment, from_stage or None, to_stage] += count
    return {
        "from": None if window.start is None else format_time(window.start),
        "to": None if window.end is None else format_time(window.end),
        "interval": interval.value,
        "buckets": change_buckets(counts.items()),
    }

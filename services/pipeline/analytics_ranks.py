"""Exact nearest-rank percentiles over long ranges, from bucket counts and one ranking
query inside one bucket (the summaries of :mod:`services.pipeline.analytics_summaries`).

A percentile of ``n`` durations is the ``k``-th smallest: the bucket counts of the whole
days of the range (summary) and of its partial edge days (rows) say which bucket holds
rank ``k``, and one indexed query ranks inside that bucket: ``ORDER BY seconds OFFSET``
from whichever end of the bucket is nearer (every rank of an answer in one statement).
Buckets are monotone in the duration, so this is the value a sort of all ``n`` finds.
An open stay lasts until the measuring time, so the shortest open stays are those that
began last: there the days themselves are the buckets, ranked by ``occurred_at``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.pipeline.analytics import (
    MEDIAN,
    P90,
    UNIT_LENGTH,
    Interval,
    Spread,
    TimeRange,
    percentile_rank,
    period_start,
    rank_in,
    split_window,
    stay_seconds,
)
from services.pipeline.analytics_summaries import (
    CHANGES,
    OPEN,
    SPAN_DAYS,
    SPAN_ROWS,
    STAY_DAYS,
)

Counts = dict[Any, dict[int, int]]
"""Per group (stage or span), count per bucket."""
DayCounts = dict[str, dict[datetime, int]]
"""Per stage, count per UTC day (its start)."""


def in_range(column: Any, window: TimeRange | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if window is not None and window.start is not None:
        conditions.append(column >= window.start)
    if window is not None and window.end is not None:
        conditions.append(column < window.end)
    return conditions


@dataclass(frozen=True, slots=True)
class Ranked:
    """Durations kept with their bucket in ``rows``, counted per day in ``summary``."""

    rows: Table
    group: str
    time: str
    value: str
    bucket: str
    summary: Table


FINISHED_STAYS = Ranked(
    CHANGES, "to_stage", "occurred_at", "stay_seconds", "stay_bucket", STAY_DAYS
)
SPANS = Ranked(SPAN_ROWS, "span", "entered_at", "seconds", "bucket", SPAN_DAYS)


async def bucket_counts(session: AsyncSession, ranked: Ranked, window: TimeRange) -> Counts:
    whole, edges = split_window(window, Interval.DAY)
    counts: Counts = defaultdict(lambda: defaultdict(int))
    s = ranked.summary.c
    if whole is not None:
        query = (
            select(s[ranked.group], s.bucket, func.sum(s["count"]))
            .where(s.bucket != OPEN, *in_range(s.day, whole))
            .group_by(s[ranked.group], s.bucket)
        )
        for group, bucket, count in (await session.execute(query)).all():
            counts[group][bucket] += int(count)
    r = ranked.rows.c
    for edge in edges:
        query = (
            select(r[ranked.group], r[ranked.bucket], func.count())
            .where(r[ranked.bucket].is_not(None), *in_range(r[ranked.time], edge))
            .group_by(r[ranked.group], r[ranked.bucket])
        )
        for group, bucket, count in (await session.execute(query)).all():
            counts[group][bucket] += int(count)
    return counts


@dataclass(frozen=True, slots=True)
class Place:
    """Where a percentile lies: its bucket, and the offset to it in the bucket's values
    sorted ascending, or descending when that is shorter (``OFFSET`` walks the index)."""

    bucket: Any
    offset: int
    descending: bool


def places(counts: Sequence[tuple[Any, int]], total: int) -> list[Place]:
    """Where the median and the p90 of ``total`` values counted per bucket lie."""
    found = []
    per_bucket = dict(counts)
    for fraction in (MEDIAN, P90):
        place = rank_in(counts, percentile_rank(total, fraction))
        assert place is not None  # a rank of at most the total always falls in a bucket
        bucket, rank = place
        from_top = per_bucket[bucket] - rank
        if from_top < rank - 1:
            found.append(Place(bucket, from_top, descending=True))
        else:
            found.append(Place(bucket, rank - 1, descending=False))
    return found


def _ordered(query: Select[Any], column: Any, place: Place) -> Select[Any]:
    order = column.desc() if place.descending else column
    return query.order_by(order).offset(place.offset).limit(1)


async def _values(session: AsyncSession, queries: Sequence[Select[Any]]) -> list[Any]:
    """Each query's one value (None when it finds no row), all in one round trip: one
    SELECT of scalar subqueries. An answer ranks in up to ten buckets; one statement each
    cost more in round trips than the ranking itself."""
    if not queries:
        return []
    return list((await session.execute(select(*(q.scalar_subquery() for q in queries)))).one())


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


async def spreads(
    session: AsyncSession, ranked: Ranked, window: TimeRange, groups: Iterable[Any]
) -> dict[Any, Spread]:
    """Count, median and p90 of the durations of each group in ``window``."""
    counts = await bucket_counts(session, ranked, window)
    r = ranked.rows.c
    totals: dict[Any, int] = {}
    queries = []
    for group in groups:
        totals[group] = total = sum(counts.get(group, {}).values())
        if not total:
            continue
        for place in places(sorted(counts[group].items()), total):
            query = select(r[ranked.value]).where(
                r[ranked.group] == group,
                r[ranked.bucket] == place.bucket,
                *in_range(r[ranked.time], window),
            )
            queries.append(_ordered(query, r[ranked.value], place))
    found = iter(await _values(session, queries))
    return {
        group: Spread(total, _seconds(next(found)), _seconds(next(found)))
        if total
        else Spread(0, None, None)
        for group, total in totals.items()
    }


# --- open stays ---------------------------------------------------------------------------


async def open_day_counts(session: AsyncSession, window: TimeRange) -> DayCounts:
    """Per stage, open stays per UTC day they began (the day's start as the key)."""
    whole, edges = split_window(window, Interval.DAY)
    counts: DayCounts = defaultdict(lambda: defaultdict(int))
    s = STAY_DAYS.c
    if whole is not None:
        query = select(s.to_stage, s.day, s["count"]).where(
            s.bucket == OPEN, s["count"] != 0, *in_range(s.day, whole)
        )
        for stage, day, count in (await session.execute(query)).all():
            counts[stage][day] += int(count)
    c = CHANGES.c
    for edge in edges:
        assert edge.start is not None  # an edge has both bounds
        day = period_start(edge.start, Interval.DAY)
        edge_query = (
            select(c.to_stage, func.count())
            .where(c.left_at.is_(None), *in_range(c.occurred_at, edge))
            .group_by(c.to_stage)
        )
        for stage, count in (await session.execute(edge_query)).all():
            counts[stage][day] += int(count)
    return counts


async def open_spreads(
    session: AsyncSession,
    window: TimeRange,
    per_stage: DayCounts,
    stages: Iterable[str],
    as_of: datetime,
) -> dict[str, Spread]:
    """Count, median and p90 of the open stays of each stage that began in ``window``
    (``per_stage``: their counts per day): the k-th shortest is the k-th latest to begin."""
    c = CHANGES.c
    totals: dict[str, int] = {}
    queries = []
    for stage in stages:
        per_day = per_stage.get(stage, {})
        totals[stage] = total = sum(per_day.values())
        if not total:
            continue
        for place in places(sorted(per_day.items(), reverse=True), total):
            day_range = TimeRange(place.bucket, place.bucket + UNIT_LENGTH[Interval.DAY])
            query = select(c.occurred_at).where(
                c.to_stage == stage,
                c.left_at.is_(None),
                *in_range(c.occurred_at, window),
                *in_range(c.occurred_at, day_range),
            )
            # latest first: a place "descending" in that order is the earliest first
            latest = Place(place.bucket, place.offset, descending=not place.descending)
            queries.append(_ordered(query, c.occurred_at, latest))
    found = iter(await _values(session, queries))

    def seconds(began: datetime | None) -> float | None:
        return None if began is None else stay_seconds(began, as_of)

    return {
        stage: Spread(total, seconds(next(found)), seconds(next(found)))
        if total
        else Spread(0, None, None)
        for stage, total in totals.items()
    }

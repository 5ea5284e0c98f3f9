"""Exact nearest-rank percentiles over long ranges, from bucket counts and one ranking
query inside one bucket (the summaries of :mod:`services.pipeline.analytics_summaries`).

A percentile of ``n`` durations is the ``k``-th smallest: the bucket counts of the whole
days of the range (summary) and of its partial edge days (rows) say which bucket holds
rank ``k``, and one indexed query ranks inside that bucket: ``ORDER BY seconds OFFSET``.
Buckets are monotone in the duration, so this is the value a sort of all ``n`` finds.
An open stay lasts until the measuring time, so the shortest open stays are those that
began last: there the days themselves are the buckets, ranked by ``occurred_at``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, func, select
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


async def spread(
    session: AsyncSession, ranked: Ranked, window: TimeRange, group: Any, counts: dict[int, int]
) -> Spread:
    """Count, median and p90 of the durations of ``group`` in ``window``."""
    total = sum(counts.values())
    if not total:
        return Spread(0, None, None)
    ordered = sorted(counts.items())
    r = ranked.rows.c
    found: list[float | None] = []
    for fraction in (MEDIAN, P90):
        place = rank_in(ordered, percentile_rank(total, fraction))
        assert place is not None  # a rank of at most the total always falls in a bucket
        bucket, rank = place
        query = (
            select(r[ranked.value])
            .where(
                r[ranked.group] == group,
                r[ranked.bucket] == bucket,
                *in_range(r[ranked.time], window),
            )
            .order_by(r[ranked.value])
            .offset(rank - 1)
            .limit(1)
        )
        value = await session.scalar(query)
        found.append(None if value is None else float(value))
    return Spread(total, found[0], found[1])


async def spreads(
    session: AsyncSession, ranked: Ranked, window: TimeRange, groups: Iterable[Any]
) -> dict[Any, Spread]:
    counts = await bucket_counts(session, ranked, window)
    return {g: await spread(session, ranked, window, g, counts.get(g, {})) for g in groups}


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


async def open_spread(
    session: AsyncSession,
    window: TimeRange,
    stage: str,
    per_day: dict[datetime, int],
    as_of: datetime,
) -> Spread:
    """Count, median and p90 of the open stays of ``stage`` that began in ``window``: the
    k-th shortest is the k-th latest to begin."""
    total = sum(per_day.values())
    if not total:
        return Spread(0, None, None)
    latest_first = sorted(per_day.items(), reverse=True)
    c = CHANGES.c
    found: list[float | None] = []
    for fraction in (MEDIAN, P90):
        place = rank_in(latest_first, percentile_rank(total, fraction))
        assert place is not None
        day, rank = place
        day_range = TimeRange(day, day + UNIT_LENGTH[Interval.DAY])
        query = (
            select(c.occurred_at)
            .where(
                c.to_stage == stage,
                c.left_at.is_(None),
                *in_range(c.occurred_at, window),
                *in_range(c.occurred_at, day_range),
            )
            .order_by(c.occurred_at.desc())
            .offset(rank - 1)
            .limit(1)
        )
        began = await session.scalar(query)
        found.append(None if began is None else stay_seconds(began, as_of))
    return Spread(total, found[0], found[1])

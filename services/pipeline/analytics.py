"""The arithmetic of the funnel analytics, without I/O: percentiles, periods, the funnel.

Definitions every analytics answer follows (README "Analytics" says the same for users):

- A lead **entered** at the earliest ``occurred_at`` of its recorded stage changes (its
  first change, the one with no ``from_stage``, unless events arrived out of order). A
  date range ``[from, to)`` on the funnel, velocity and cohorts selects the leads that
  entered in it; a lead with no recorded change yet has no entry time and is counted
  only when neither bound is given. Its **source** is the ``source`` of its first change
  by sequence: the source of the event that created it.
- A lead **reached** a forward stage (lead -> prospect -> opportunity -> customer) when
  any of its changes came from or went to that stage or a later one, or it is in one
  now: reaching a later stage counts as passing the ones before, as in
  :func:`services.pipeline.store.funnel`. It *reached it at* the earliest ``occurred_at``
  of a change into that stage or a later one (the entry time for ``lead``).
- A **stay** is the time a lead spends in the stage one change put it in, from that
  change's ``occurred_at`` to the next change's by sequence (finished), or to the
  measuring time when there is none yet (open). Time in stage over ``[from, to)`` takes
  the stays that began in it. A stay never lasts less than zero seconds (events can
  arrive out of order).
- **Percentiles** are nearest-rank: of ``n`` values in ascending order, the ``p``
  percentile is the ``ceil(p * n)``-th (PostgreSQL's ``percentile_disc``); ``None`` of
  no values.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import Any, TypeVar

from services.pipeline.api_models import Funnel, FunnelStage, SourceFunnel, StageConversion
from shared.events import Stage, format_time

FORWARD_STAGES = (Stage.LEAD, Stage.PROSPECT, Stage.OPPORTUNITY, Stage.CUSTOMER)
"""The funnel, in order; ``disqualified`` leaves it and is counted on its own."""

LATER_STAGES = FORWARD_STAGES[1:]
"""The stages a cohort is followed into."""

K = TypeVar("K")

MEDIAN = 0.5
P90 = 0.9


class Period(StrEnum):
    """How cohorts are grouped by when their leads entered (UTC; weeks start on Monday)."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class Interval(StrEnum):
    """How stage changes are counted over time (UTC; weeks start on Monday)."""

    HOUR = "hour"
    DAY = "day"
    WEEK = "week"


UNIT_LENGTH = {Interval.HOUR: timedelta(hours=1), Interval.DAY: timedelta(days=1)}


def nearest_rank(ordered: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` percentile of ascending ``ordered`` values by nearest rank."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Spread:
    """How many durations, and their median and 90th percentile (nearest rank)."""

    count: int
    median: float | None
    p90: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        ordered = sorted(values)
        return cls(len(ordered), nearest_rank(ordered, MEDIAN), nearest_rank(ordered, P90))


def stay_seconds(began: datetime, ended: datetime) -> float:
    """How long a stay lasted, never less than zero."""
    return max(0.0, (ended - began).total_seconds())


STAY_BUCKET_FACTOR = 1.3
STAY_BUCKET_BOUNDS = tuple(STAY_BUCKET_FACTOR**i for i in range(80))
"""Lower bounds of the duration buckets after the first (under one second): each bound
the last times the factor, up to about eleven years; the last bucket has no upper bound."""


def stay_bucket(seconds: float) -> int:
    """The log-scale bucket of a duration: 0 below the first bound, then one per factor.

    Monotone in ``seconds``, so the values of a bucket all lie between those of the
    buckets either side of it: a percentile is found by counting whole buckets, then
    ranking inside one (the SQL spelling is
    :func:`services.pipeline.analytics_summaries.bucket_of`, over the same bounds).
    """
    return bisect_right(STAY_BUCKET_BOUNDS, seconds)


def rank_in(counts: Iterable[tuple[K, int]], rank: int) -> tuple[K, int] | None:
    """The bucket holding the ``rank``-th value (1-based) of ``(bucket, count)`` pairs in
    value order, and the value's rank inside that bucket; ``None`` past the last."""
    before = 0
    for bucket, count in counts:
        if before + count >= rank:
            return bucket, rank - before
        before += count
    return None


def percentile_rank(count: int, fraction: float) -> int:
    """The nearest rank (1-based) of the ``fraction`` percentile of ``count`` values."""
    return max(1, math.ceil(fraction * count))


def split_window(window: TimeRange, unit: Interval) -> tuple[TimeRange | None, list[TimeRange]]:
    """``window`` cut into the whole hours or days inside it and the partial ones at its
    edges: the whole ones are read from a summary, the edges from the rows themselves."""
    first = window.start
    if first is not None:
        floor = period_start(first, unit)
        first = floor if floor == first else floor + UNIT_LENGTH[unit]
    last = None if window.end is None else period_start(window.end, unit)
    if first is not None and last is not None and first > last:  # inside one unit
        return None, [window]
    edges = []
    if window.start is not None and first is not None and window.start < first:
        edges.append(TimeRange(window.start, first))
    if window.end is not None and last is not None and last < window.end:
        edges.append(TimeRange(last, window.end))
    if first is not None and first == last:  # two partial units, none whole
        return None, edges
    return TimeRange(first, last), edges


def period_start(moment: datetime, unit: Period | Interval) -> datetime:
    """The start (UTC) of the day, week (Monday), month or hour holding ``moment``."""
    moment = moment.astimezone(UTC)
    if unit == Interval.HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit in (Period.WEEK, Interval.WEEK):
        return day - timedelta(days=day.weekday())
    if unit == Period.MONTH:
        return day.replace(day=1)
    return day


def period_date(moment: datetime, period: Period) -> date:
    return period_start(moment, period).date()


@dataclass(frozen=True, slots=True)
class LeadCount:
    """Leads alike in what the funnel counts: stage now, furthest rank, ever disqualified."""

    stage: Stage
    furthest: int
    disqualified: bool
    source: str | None
    count: int


def funnel_of(counts: Iterable[LeadCount], *, by_source: bool = False) -> Funnel:
    """The funnel of these leads, and with ``by_source`` one funnel per source beside it."""
    counts = list(counts)
    whole = _funnel(counts)
    if not by_source:
        return whole
    sources = sorted({c.source for c in counts}, key=lambda s: (s is None, s or ""))
    breakdown = []
    for source in sources:
        part = _funnel([c for c in counts if c.source == source])
        breakdown.append(
            SourceFunnel(
                source=source,
                total_leads=part.total_leads,
                stages=part.stages,
                conversions=part.conversions,
            )
        )
    return whole.model_copy(update={"breakdown": breakdown})


def _funnel(counts: Sequence[LeadCount]) -> Funnel:
    current = dict.fromkeys(Stage, 0)
    reached = dict.fromkeys(Stage, 0)
    total = 0
    for row in counts:
        total += row.count
        current[row.stage] += row.count
        for forward in FORWARD_STAGES[: row.furthest + 1]:
            reached[forward] += row.count
        if row.disqualified:
            reached[Stage.DISQUALIFIED] += row.count
    return Funnel(
        total_leads=total,
        stages=[FunnelStage(stage=s, current=current[s], reached=reached[s]) for s in Stage],
        conversions=[
            StageConversion(
                from_stage=a, to_stage=b, rate=reached[b] / reached[a] if reached[a] else None
            )
            for a, b in pairwise(FORWARD_STAGES)
        ],
    )


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``[start, end)``; a missing bound leaves that side open."""

    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("must be later than from")

    @property
    def bounded(self) -> bool:
        return self.start is not None or self.end is not None


ChangeKey = tuple[datetime, str | None, str]
"""A bucket's start (UTC) and a (from_stage, to_stage); ``None`` for the creating change."""

_ORDER: dict[str | None, int] = {None: -1} | {stage.value: i for i, stage in enumerate(Stage)}
"""Funnel order, the creating change (no from_stage) first."""


def change_buckets(counts: Iterable[tuple[ChangeKey, int]]) -> list[dict[str, Any]]:
    """The ``buckets`` of a stage-changes answer, as the JSON it is served as
    (:class:`services.pipeline.analytics_models.ChangeBucket`): oldest first, each bucket's
    transitions most first, then in funnel order; counts of zero left out.

    Plain values rather than models, sorted once: an hourly answer over a month holds
    thousands of transitions, and a model for each took most of its time."""
    order = _ORDER
    # int(): PostgreSQL's SUM of integers is a numeric, which JSON encoders refuse
    ranked = sorted(
        (start, -int(count), order[a], order[b], a, b) for (start, a, b), count in counts if count
    )
    buckets: list[dict[str, Any]] = []
    current: datetime | None = None
    transitions: list[dict[str, Any]] = []
    for start, negated, _, _, a, b in ranked:
        if start != current:
            current, transitions = start, []
            buckets.append({"start": format_time(start), "total": 0, "transitions": transitions})
        buckets[-1]["total"] -= negated
        transitions.append({"from_stage": a, "to_stage": b, "count": -negated})
    return buckets

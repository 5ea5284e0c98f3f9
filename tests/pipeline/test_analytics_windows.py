"""The pure pieces the summaries rest on: buckets, ranks inside buckets, window cuts."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from services.pipeline.analytics import (
    STAY_BUCKET_BOUNDS,
    Interval,
    TimeRange,
    change_buckets,
    nearest_rank,
    percentile_rank,
    period_start,
    rank_in,
    split_window,
    stay_bucket,
)
from services.pipeline.analytics_ranks import places

T = datetime(2026, 11, 3, 10, 20, 30, 250000, tzinfo=UTC)


def test_buckets_are_monotone_and_log_scale() -> None:
    values = [
        *sorted(random.Random(3).lognormvariate(10, 4) for _ in range(5000)),
        0.0,
        1000000000000.0,
    ]
    buckets = [stay_bucket(v) for v in sorted(values)]
    assert buckets == sorted(buckets)
    assert stay_bucket(0.0) == 0
    assert stay_bucket(0.999) == 0
    assert stay_bucket(1.0) == 1
    assert stay_bucket(1e12) == len(STAY_BUCKET_BOUNDS)
    for low, high in itertools.pairwise(STAY_BUCKET_BOUNDS):
        assert stay_bucket(low) == stay_bucket(high) - 1
        assert high / low == pytest.approx(1.3)


def test_ranking_through_bucket_counts_finds_the_nearest_rank() -> None:
    rng = random.Random(5)
    for _ in range(200):
        values = sorted(
            rng.choice([0.0, 0.5, 3.0, 60.0, 86400.0]) * rng.random()
            for _ in range(rng.randint(1, 40))
        )
        counts: dict[int, int] = {}
        for v in values:
            counts[stay_bucket(v)] = counts.get(stay_bucket(v), 0) + 1
        for fraction in (0.5, 0.9):
            place = rank_in(sorted(counts.items()), percentile_rank(len(values), fraction))
            assert place is not None
            bucket, rank = place
            inside = [v for v in values if stay_bucket(v) == bucket]
            assert inside[rank - 1] == nearest_rank(values, fraction)
    assert rank_in([(0, 2), (3, 1)], 4) is None


def covered(window: TimeRange, unit: Interval) -> list[TimeRange]:
    whole, edges = split_window(window, unit)
    return ([] if whole is None else [whole]) + edges


@pytest.mark.parametrize("unit", [Interval.HOUR, Interval.DAY])
@pytest.mark.parametrize(
    ("start", "end"),
    [
        (T, T + timedelta(minutes=5)),
        (T, T + timedelta(hours=20)),
        (T, T + timedelta(days=3, hours=1)),
        (period_start(T, Interval.DAY), T + timedelta(days=2)),
        (T, period_start(T, Interval.DAY) + timedelta(days=1)),
        (None, T),
        (T, None),
        (None, None),
    ],
)
def test_a_window_is_cut_into_whole_units_and_edges(
    unit: Interval, start: datetime | None, end: datetime | None
) -> None:
    window = TimeRange(start, end)
    whole, edges = split_window(window, unit)
    parts = sorted(covered(window, unit), key=lambda r: r.start or datetime.min.replace(tzinfo=UTC))
    # the parts tile the window, in order, with no gap or overlap
    assert parts[0].start == window.start
    assert parts[-1].end == window.end
    for before, after in itertools.pairwise(parts):
        assert before.end == after.start
    if whole is not None:
        for bound in (whole.start, whole.end):
            assert bound is None or period_start(bound, unit) == bound
    for edge in edges:  # each edge lies inside one unit
        assert edge.start is not None
        assert edge.end is not None
        assert period_start(edge.start, unit) == period_start(edge.end - timedelta.resolution, unit)


def test_change_buckets_are_oldest_first_most_first_and_skip_zeros() -> None:
    later = T + timedelta(hours=1)
    buckets = change_buckets(
        [
            ((later, "lead", "prospect"), 1),
            ((T, "prospect", "opportunity"), 2),
            ((T, None, "lead"), 2),
            ((T, "lead", "prospect"), 5),
            ((T, "lead", "disqualified"), 0),
        ]
    )
    assert buckets == [
        {
            "start": "2026-11-03T10:20:30.250000Z",
            "total": 9,
            "transitions": [
                {"from_stage": "lead", "to_stage": "prospect", "count": 5},
                {"from_stage": None, "to_stage": "lead", "count": 2},
                {"from_stage": "prospect", "to_stage": "opportunity", "count": 2},
            ],
        },
        {
            "start": "2026-11-03T11:20:30.250000Z",
            "total": 1,
            "transitions": [{"from_stage": "lead", "to_stage": "prospect", "count": 1}],
        },
    ]


@pytest.mark.parametrize("seed", range(5))
def test_a_place_finds_the_nearest_rank_from_the_nearer_end_of_its_bucket(seed: int) -> None:
    rng = random.Random(seed)
    values = sorted(stay_bucket(rng.lognormvariate(10, 3)) * 1.0 + rng.random() for _ in range(99))
    per_bucket: dict[int, list[float]] = {}
    for value in values:
        per_bucket.setdefault(int(value), []).append(value)
    counts = sorted((bucket, len(found)) for bucket, found in per_bucket.items())
    for place, fraction in zip(places(counts, len(values)), (0.5, 0.9), strict=True):
        inside = sorted(per_bucket[place.bucket], reverse=place.descending)
        assert inside[place.offset] == nearest_rank(values, fraction)
        assert place.offset <= len(inside) // 2

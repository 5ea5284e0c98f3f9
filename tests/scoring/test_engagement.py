"""Decay in event time: halves every half-life, whatever order the events arrive in."""

from __future__ import annotations

import math
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.scoring.engagement import Decayed, Engagement, decay
from services.scoring.lead import LeadState
from services.scoring.state_records import lead_record, read_lead

DAY = 86_400.0
HALF_LIFE = 30 * DAY
T = 1_740_000_000.0  # seconds since the epoch, early 2025

points = st.floats(min_value=-100, max_value=100, allow_nan=False).filter(lambda p: p != 0)
offsets = st.floats(min_value=0, max_value=200 * DAY, allow_nan=False)


def test_decay_is_one_at_zero_and_a_half_after_one_half_life() -> None:
    assert decay(0.0, HALF_LIFE) == 1.0
    assert decay(HALF_LIFE, HALF_LIFE) == 0.5
    assert decay(2 * HALF_LIFE, HALF_LIFE) == 0.25


def test_nothing_added_is_worth_nothing() -> None:
    assert Decayed().value_at(T, HALF_LIFE) == 0.0
    assert Engagement().value_at(T, HALF_LIFE) == 0.0


def test_points_at_the_same_time_add_up_exactly() -> None:
    total = Decayed()
    for p in (10, 15, 5, 5, 5):
        total = total.add(p, T, HALF_LIFE)
    assert total == Decayed(40.0, T)


@settings(max_examples=50)
@given(p=points, start=offsets, extra=offsets)
def test_value_halves_after_one_half_life(p: float, start: float, extra: float) -> None:
    added = Decayed().add(p, T + start, HALF_LIFE)
    later = T + start + extra
    assert math.isclose(
        added.value_at(later + HALF_LIFE, HALF_LIFE),
        added.value_at(later, HALF_LIFE) / 2,
        rel_tol=1e-12,
        abs_tol=1e-300,
    )


def test_a_newer_event_decays_the_sum_then_adds() -> None:
    later = Decayed(40.0, T).add(10, T + HALF_LIFE, HALF_LIFE)
    assert later == Decayed(30.0, T + HALF_LIFE)


def test_an_older_event_folds_in_with_its_own_time_and_keeps_as_of() -> None:
    folded = Decayed(40.0, T).add(10, T - HALF_LIFE, HALF_LIFE)
    assert folded == Decayed(45.0, T)


@settings(max_examples=50)
@given(
    events=st.lists(st.tuples(points, offsets), min_size=1, max_size=12),
    order=st.randoms(use_true_random=False),
)
def test_the_order_of_events_does_not_matter(
    events: list[tuple[float, float]], order: random.Random
) -> None:
    def fold(sequence: list[tuple[float, float]]) -> Decayed:
        total = Decayed()
        for p, offset in sequence:
            total = total.add(p, T + offset, HALF_LIFE)
        return total

    shuffled = list(events)
    order.shuffle(shuffled)
    a, b = fold(events), fold(shuffled)
    latest = T + max(offset for _, offset in events)
    assert a.as_of == b.as_of == latest
    expected = sum(p * 2 ** (-(latest - T - offset) / HALF_LIFE) for p, offset in events)
    scale = sum(abs(p) for p, _ in events)
    assert math.isclose(a.value, b.value, rel_tol=1e-9, abs_tol=1e-9 * scale)
    assert math.isclose(a.value, expected, rel_tol=1e-9, abs_tol=1e-9 * scale)


def test_engagement_keeps_a_total_and_one_sum_and_count_per_rule() -> None:
    engagement = Engagement().add("r0", 5, T, HALF_LIFE).add("r4", 10, T, HALF_LIFE)
    engagement = engagement.add("r0", 5, T + HALF_LIFE, HALF_LIFE)
    assert engagement.total == Decayed(12.5, T + HALF_LIFE)
    assert engagement.rules["r0"].decayed == Decayed(7.5, T + HALF_LIFE)
    assert engagement.rules["r0"].count == 2
    assert engagement.rules["r4"].decayed.value_at(T + HALF_LIFE, HALF_LIFE) == 5.0
    assert engagement.rules["r4"].count == 1


def test_adding_returns_a_new_engagement_and_leaves_the_old_one_alone() -> None:
    before = Engagement().add("r0", 5, T, HALF_LIFE)
    after = before.add("r0", 5, T, HALF_LIFE)
    assert before.rules["r0"].count == 1
    assert after.rules["r0"].count == 2


@settings(max_examples=30)
@given(
    events=st.lists(st.tuples(st.integers(0, 7), points, offsets), max_size=10),
    recycled=st.none() | offsets,
)
def test_engagement_round_trips_through_the_changelog(
    events: list[tuple[int, float, float]], recycled: float | None
) -> None:
    engagement = Engagement()
    for index, (rule, p, offset) in enumerate(events):
        if recycled is not None and index == len(events) // 2:
            engagement = engagement.recycle(T + recycled)
        engagement = engagement.add(f"r{rule}", p, T + offset, HALF_LIFE)
    state = LeadState("ada", engagement=engagement)
    assert read_lead(orjson.loads(lead_record(state))).engagement == engagement


def test_after_a_recycle_only_later_events_qualify_while_the_total_keeps_its_history() -> None:
    engagement = Engagement().add("demo", 30, T, HALF_LIFE).recycle(T + DAY)
    engagement = engagement.add("form", 10, T + 2 * DAY, HALF_LIFE)
    engagement = engagement.add("late", 5, T + DAY / 2, HALF_LIFE)  # before the recycle
    now = T + 2 * DAY
    assert engagement.qualifying_at(now, HALF_LIFE) == 10
    whole = 30 * decay(2 * DAY, HALF_LIFE) + 10 + 5 * decay(1.5 * DAY, HALF_LIFE)
    assert engagement.value_at(now, HALF_LIFE) == pytest.approx(whole, rel=1e-12)
    assert Engagement().add("demo", 30, T, HALF_LIFE).qualifying_at(T, HALF_LIFE) == 30

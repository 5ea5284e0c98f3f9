"""The webhooks case's arithmetic: what it sends when, and what it counts as delivered."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.deliveries import latencies_ms, missing, sample_every, tally, throughput, tick_sizes


@given(
    st.floats(min_value=0.1, max_value=50_000),
    st.floats(min_value=0.5, max_value=120),
    st.sampled_from([10, 20, 50]),
)
def test_an_open_loop_sends_the_rate_times_the_duration(
    rate: float, seconds: float, ticks: int
) -> None:
    sizes = tick_sizes(rate, seconds, ticks)
    assert len(sizes) == max(1, round(seconds * ticks))
    assert sum(sizes) == math.floor(rate / ticks * len(sizes) + 1e-9)
    assert max(sizes) - min(sizes) <= 1  # spread evenly, never bunched


def test_a_fractional_tick_alternates_instead_of_rounding_down() -> None:
    assert tick_sizes(48, 1, 20) == [2, 2, 3, 2, 3] * 4
    assert sum(tick_sizes(0.5, 4, 20)) == 2


def test_each_pair_counts_once_at_its_first_arrival() -> None:
    expected = {"msg_a": 10.0, "msg_b": 10.5}
    arrivals = [
        ("ep0", "msg_a", 10.2),
        ("ep1", "msg_a", 10.3),
        ("ep0", "msg_a", 10.1),  # a retry that came in first is still the first arrival
        ("ep0", "msg_b", 10.6),
        ("ep0", "msg_old", 9.0),  # another run's
        ("ep9", "msg_a", 10.4),  # not an endpoint of this run
    ]
    counted = tally(arrivals, expected, ["ep0", "ep1"])
    assert counted.delivered == 3
    assert counted.duplicates == 1
    assert counted.unexpected == 2
    assert missing(counted, list(expected), ["ep0", "ep1"]) == 1  # msg_b never reached ep1
    assert sorted(latencies_ms(counted, expected)) == pytest.approx([100.0, 100.0, 300.0])


def test_throughput_runs_to_the_last_endpoints_last_change() -> None:
    expected = {"msg_a": 0.0, "msg_b": 0.0}
    arrivals = [("ep0", "msg_a", 1.0), ("ep1", "msg_a", 2.0), ("ep0", "msg_b", 4.0)]
    assert throughput(2, 0.0, tally(arrivals, expected, ["ep0", "ep1"])) == 0.5
    assert throughput(2, 0.0, tally([], expected, ["ep0"])) == 0.0


def test_the_sample_is_about_the_size_asked() -> None:
    assert sample_every(5_000, 200) == 25
    assert sample_every(100, 200) == 1
    assert sample_every(0, 0) == 1

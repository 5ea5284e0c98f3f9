"""Consumer lag: from the position to the end a read_committed reader may read."""

from __future__ import annotations

from shared.consumer_lag import consumer_lag


def test_lag_counts_to_the_last_stable_offset_not_past_an_open_transaction() -> None:
    assert consumer_lag(position=10, highwater=25, last_stable=18) == 8


def test_at_rest_past_the_last_marker_the_lag_is_zero() -> None:
    assert consumer_lag(position=42, highwater=42, last_stable=42) == 0


def test_without_a_last_stable_offset_the_highwater_is_the_end() -> None:
    assert consumer_lag(position=3, highwater=7, last_stable=None) == 4
    assert consumer_lag(position=3, highwater=7, last_stable=-1) == 4


def test_unknown_before_the_first_fetch() -> None:
    assert consumer_lag(position=0, highwater=None, last_stable=None) is None


def test_never_negative_when_the_position_is_ahead_of_a_stale_end() -> None:
    assert consumer_lag(position=50, highwater=40, last_stable=40) == 0

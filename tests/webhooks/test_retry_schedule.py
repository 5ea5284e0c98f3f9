from __future__ import annotations

import random
from datetime import timedelta

from services.webhooks.retry_schedule import ATTEMPTS, DELAYS, JITTER, next_delay, retry_after


def test_the_schedule_is_the_standard_webhooks_one_and_ends_after_ten_attempts() -> None:
    minutes = [d / timedelta(minutes=1) for d in DELAYS]
    assert minutes == [5 / 60, 5, 30, 120, 300, 600, 840, 1200, 1440]
    assert ATTEMPTS == 10
    assert next_delay(0) == timedelta(0)
    assert next_delay(ATTEMPTS) is None


def test_jitter_stays_within_its_bound_and_varies() -> None:
    rng = random.Random(3)
    delays = [next_delay(2, rng) for _ in range(200)]
    assert all(d is not None and abs(d / DELAYS[1] - 1) <= JITTER for d in delays)
    assert len(set(delays)) > 100


def test_retry_after_in_seconds_is_read_and_capped() -> None:
    assert retry_after("120") == timedelta(seconds=120)
    assert retry_after(" 7 ") == timedelta(seconds=7)
    assert retry_after("9999999") == timedelta(hours=24)
    assert retry_after("Wed, 21 Oct 2026 07:28:00 GMT") is None
    assert retry_after(None) is None

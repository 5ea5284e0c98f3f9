"""shared/rate_limit.py: token buckets on a clock the test moves by hand."""

from __future__ import annotations

import pytest

from shared import rate_limit
from shared.rate_limit import RateLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_one_request_per_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.retry_after("mailer") for _ in range(3)] == [None, None, None]
    assert limiter.retry_after("mailer") == 1  # half a second, rounded up
    clock.now += 0.5
    assert limiter.retry_after("mailer") is None
    assert limiter.retry_after("mailer") == 1


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=0.25, burst=1, clock=clock)
    assert limiter.retry_after("crm") is None
    assert limiter.retry_after("crm") == 4
    clock.now += 2.5
    assert limiter.retry_after("crm") == 2  # 1.5 s left
    clock.now += 1.5
    assert limiter.retry_after("crm") is None


def test_each_caller_has_its_own_bucket() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, clock=Clock())
    assert limiter.retry_after("a") is None
    assert limiter.retry_after("a") == 1
    assert limiter.retry_after("b") is None


def test_an_idle_bucket_refills_to_its_burst_only() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=1.0, burst=2.0, tokens=0.0, updated=clock.now)
    clock.now += 3600
    assert bucket.take(clock.now) == 0.0
    assert bucket.take(clock.now) == 0.0
    assert bucket.take(clock.now) == pytest.approx(1.0)


def test_a_clock_going_back_gives_no_tokens() -> None:
    bucket = TokenBucket(rate=1.0, burst=1.0, tokens=0.0, updated=10.0)
    assert bucket.take(5.0) == pytest.approx(1.0)


def test_callers_are_forgotten_full_buckets_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rate_limit, "MAX_BUCKETS", 3)
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    for name in ("a", "b"):
        limiter.retry_after(name)
    clock.now += 5  # a and b have refilled
    limiter.retry_after("c")
    limiter.retry_after("d")  # over the limit: the full ones go
    assert set(limiter.buckets) == {"c", "d"}
    assert limiter.retry_after("c") == 1  # c kept its empty bucket


def test_a_limit_needs_a_rate_and_a_burst() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        RateLimiter(rate=0, burst=1)
    with pytest.raises(ValueError, match="burst >= 1"):
        RateLimiter(rate=1, burst=0)

"""Per-caller request rate limits: a token bucket each, on an injectable clock.

A bucket holds up to ``burst`` tokens and gains ``rate`` per second; a request takes
one. An empty bucket answers how long until the next token, which becomes the
``Retry-After`` of a 429. Pure: the clock is passed in, so tests step time by hand.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]

MAX_BUCKETS = 10_000
"""Callers remembered at once; JWT subjects are not a fixed list. Full buckets are
forgotten first: a caller that comes back gets a full bucket again, as it would have."""


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per caller name, all with the same rate and burst."""

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a rate > 0 and a burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}

    def retry_after(self, caller: str) -> int | None:
        """None when ``caller`` may go on, else the whole seconds to wait (at least 1)."""
        now = self.clock()
        bucket = self.buckets.get(caller)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            bucket = self.buckets[caller] = TokenBucket(self.rate, self.burst, self.burst, now)
        wait = bucket.take(now)
        if wait == 0.0:
            return None
        return max(1, math.ceil(wait))

    def _forget_full(self, now: float) -> None:
        refill = self.burst / self.rate
        full = [name for name, b in self.buckets.items() if now - b.updated >= refill]
        for name in full or list(self.buckets)[: len(self.buckets) // 2]:
            del self.buckets[name]

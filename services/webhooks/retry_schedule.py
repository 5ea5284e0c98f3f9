"""When a message is tried again: the Standard Webhooks schedule, with jitter.

Ten attempts over about three days: immediately, then after each delay below.
Jitter spreads the retries of many messages that failed together (an endpoint
that was down), so they do not all arrive in the same second when it is back.
"""

from __future__ import annotations

import random
from datetime import timedelta

DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
"""The wait after attempt 1, 2, ...: the last one is followed by no other."""

ATTEMPTS = len(DELAYS) + 1

JITTER = 0.1
"""Each delay is stretched or shrunk by up to this fraction."""

MAX_RETRY_AFTER = timedelta(hours=24)
"""The longest ``Retry-After`` honoured: a receiver cannot park a message for ever."""


def next_delay(attempts_made: int, rng: random.Random | None = None) -> timedelta | None:
    """The wait before the next attempt after ``attempts_made`` attempts; None: give up."""
    if attempts_made < 1:
        return timedelta(0)
    if attempts_made > len(DELAYS):
        return None
    base = DELAYS[attempts_made - 1]
    spread = (rng or random).uniform(-JITTER, JITTER)
    return base * (1 + spread)


def retry_after(header: str | None) -> timedelta | None:
    """A ``Retry-After`` in seconds, capped; None when absent or not a number of seconds.

    The HTTP-date form is rare from webhook receivers and is read as absent.
    """
    if header is None or not header.strip().isdigit():
        return None
    return min(timedelta(seconds=int(header.strip())), MAX_RETRY_AFTER)

"""Engagement valued at any moment from what a score update stores: pure, no I/O.

A score update holds a lead's engagement as of its latest event; until the next event it
only decays, ``e(t) = e * 2 ** (-(t - as_of) / h)`` with the model's half-life ``h``. The
API values every lead at the time of the request (or ``?as_of=``), and must filter and
sort a million of them by that value with an index. So the store keeps the engagement in
a form whose order does not depend on ``t``: with the rate ``r = 1 / h``, the sign ``s``
of ``e`` and ``L = log2|e| + r * (as_of - EPOCH)``,

    e(t) = s * 2 ** (L - r * (t - EPOCH)).

Leads that share fit, rate and sign (a *group*: fit takes few values, and the leads of one
model share the rate) keep one order at every ``t``: by ``L``, descending when ``s = +1``,
ascending when ``s = -1``, all equal when ``s = 0``. A logarithm rather than the plain
product ``e * 2 ** (r * (as_of - EPOCH))``: that one overflows a double after about a
thousand half-lives, this one never.

A lead is never valued before its latest event (leadflow keeps no score per moment): a
time before it values the lead at the event, as stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
"""Any fixed moment would do; changing it changes every stored ``L``."""


@dataclass(frozen=True, slots=True)
class StoredEngagement:
    """The three columns a lead's engagement is stored as (see the module)."""

    rate: float
    """Per second: ``1 / half-life``; 0 for a score without a half-life (it does not decay)."""
    sign: int
    log2: float
    """``L``; 0 when ``sign`` is 0."""

    @classmethod
    def of(
        cls, engagement: float, as_of: datetime | None, half_life_seconds: float | None
    ) -> StoredEngagement:
        rate = 0.0 if half_life_seconds is None or as_of is None else 1.0 / half_life_seconds
        if engagement == 0:
            return cls(rate, 0, 0.0)
        since = 0.0 if as_of is None else seconds_since_epoch(as_of)
        return cls(rate, 1 if engagement > 0 else -1, math.log2(abs(engagement)) + rate * since)


def seconds_since_epoch(at: datetime) -> float:
    return (at - EPOCH).total_seconds()


def decayed(
    stored_engagement: float,
    as_of: datetime | None,
    engagement: StoredEngagement,
    at: datetime,
) -> float:
    """The engagement at ``at``: the stored value itself at or before the latest event."""
    if engagement.sign == 0 or engagement.rate == 0 or as_of is None or at <= as_of:
        return stored_engagement
    exponent = engagement.log2 - engagement.rate * seconds_since_epoch(at)
    return engagement.sign * 2.0**exponent if exponent > -1074 else 0.0


def log2_at_least(engagement: float, rate: float, at: datetime) -> float:
    """The ``L`` a lead of this rate needs (with sign +1) to have at least ``engagement``
    at ``at``; for sign -1 the same ``L`` is the most it may have (see :func:`decayed`)."""
    return math.log2(engagement) + rate * seconds_since_epoch(at)

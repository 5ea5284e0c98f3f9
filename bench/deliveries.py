"""The webhooks case's arithmetic, without I/O: what to send when, and what arrived.

A receiver records ``(path, webhook-id, arrival time)`` for every request; the
bench knows when each stage change became visible (its transaction's commit
returned) or, on the raw side, when its post was due. Everything the case
reports is computed here from those two, so it can be tested apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Arrival = tuple[str, str, float]
"""``(path, webhook-id, wall-clock seconds)`` of one request a receiver answered."""


def tick_sizes(rate: float, seconds: float, ticks_per_second: float) -> list[int]:
    """Records per tick of an open loop at ``rate`` records/s.

    Rounded cumulatively, so a rate that is not a multiple of the ticks is kept
    exactly over the run (a tick of 2.4 records gives 2, 2, 3, 2, 3 ...), never
    rounded down for the whole run."""
    ticks = max(1, round(seconds * ticks_per_second))
    per_tick = rate / ticks_per_second
    sizes, sent = [], 0
    for index in range(1, ticks + 1):
        due = math.floor(per_tick * index + 1e-9)
        sizes.append(due - sent)
        sent = due
    return sizes


@dataclass(frozen=True)
class Tally:
    """What the receivers saw of one run."""

    delivered: int
    """Distinct ``(path, webhook-id)`` pairs that were expected."""
    duplicates: int
    """Requests for a pair already seen (retries after a lost answer)."""
    unexpected: int
    """Requests for an id the run did not send (another run's, or a bug)."""
    first_at: dict[tuple[str, str], float]
    """The first arrival of each expected pair."""


def tally(
    arrivals: Iterable[Arrival], expected: Mapping[str, float], paths: Iterable[str]
) -> Tally:
    """``expected``: webhook-id -> its start time; every id is due at every path."""
    wanted = set(paths)
    first: dict[tuple[str, str], float] = {}
    duplicates = unexpected = 0
    for path, webhook_id, at in arrivals:
        if path not in wanted or webhook_id not in expected:
            unexpected += 1
            continue
        key = (path, webhook_id)
        if key in first:
            duplicates += 1
            first[key] = min(first[key], at)
        else:
            first[key] = at
    return Tally(len(first), duplicates, unexpected, first)


def latencies_ms(counted: Tally, expected: Mapping[str, float]) -> list[float]:
    """Start of each expected id to its first arrival at each path, in milliseconds."""
    return [(at - expected[webhook_id]) * 1000 for (_, webhook_id), at in counted.first_at.items()]


def throughput(changes: int, started: float, counted: Tally) -> float:
    """Stage changes per second, each delivered to every path: from ``started`` to the
    last first arrival (the moment the last endpoint had the last change)."""
    if not counted.first_at:
        return 0.0
    elapsed = max(counted.first_at.values()) - started
    return changes / elapsed if elapsed > 0 else math.inf


def sample_every(total: int, wanted: int) -> int:
    """Keep every n-th request for signature checks: about ``wanted`` of ``total``."""
    return max(1, total // max(1, wanted))


def missing(counted: Tally, ids: Sequence[str], paths: Sequence[str]) -> int:
    return len(ids) * len(paths) - counted.delivered

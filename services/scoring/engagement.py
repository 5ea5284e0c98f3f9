"""Engagement: points that fade with a half-life in EVENT time, kept in O(1) per event.

``E = sum_i points_i * 2 ** (-(as_of - t_i) / half_life)`` is stored as one
``(value, as_of)`` pair: a newer event decays the sum up to its own time and
adds its points; an older (out-of-order) event adds its points decayed to
``as_of``. Either way the result is the same sum, whatever the arrival order,
which is what makes scores a pure function of the events rather than of when
the worker happened to read them. Event time, not wall-clock time, so a replay
or a lagging consumer scores exactly like the live path. Times are seconds
since the epoch, as floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


def decay(elapsed: float, half_life: float) -> float:
    """The factor left after ``elapsed`` seconds: 0.5 after one half-life."""
    return float(2.0 ** (-elapsed / half_life))


@dataclass(frozen=True, slots=True)
class Decayed:
    """A sum of decaying points, valued at ``as_of`` (``None`` until the first points)."""

    value: float = 0.0
    as_of: float | None = None

    def add(self, points: float, at: float, half_life: float) -> Decayed:
        if self.as_of is None:
            return Decayed(points, at)
        if at >= self.as_of:
            return Decayed(self.value * decay(at - self.as_of, half_life) + points, at)
        return Decayed(self.value + points * decay(self.as_of - at, half_life), self.as_of)

    def value_at(self, at: float, half_life: float) -> float:
        """The sum as seen at ``at`` (a lead's ``as_of`` may be later than this sum's)."""
        if self.as_of is None:
            return 0.0
        return self.value * decay(at - self.as_of, half_life)


@dataclass(frozen=True, slots=True)
class RuleEngagement:
    """What one engagement rule adds: its decayed points and how many events scored."""

    decayed: Decayed = Decayed()
    count: int = 0


@dataclass(frozen=True)
class Engagement:
    """The lead's engagement total, plus one decayed sum per rule to explain it.

    Immutable: adding returns a new value, so a lead state can be copied cheaply. After a
    recycle (docs/architecture.md §1) ``since_recycle`` sums only the points of events at or
    after ``recycled_at``: what the stage machine qualifies on, while the total, the
    engagement a lead shows, keeps its whole decaying history.
    """

    total: Decayed = Decayed()
    rules: Mapping[str, RuleEngagement] = field(default_factory=dict)
    """Keyed by the rule's id; only rules that ever scored."""
    recycled_at: float | None = None
    """The event time of the lead's latest recycle; ``None`` if it was never recycled."""
    since_recycle: Decayed = Decayed()

    def add(self, rule: str, points: float, at: float, half_life: float) -> Engagement:
        """Fold in one scored event of rule ``rule`` at ``at`` (seconds since the epoch)."""
        before = self.rules.get(rule, RuleEngagement())
        after = RuleEngagement(before.decayed.add(points, at, half_life), before.count + 1)
        since = self.since_recycle
        if self.recycled_at is not None and at >= self.recycled_at:
            since = since.add(points, at, half_life)
        total = self.total.add(points, at, half_life)
        return Engagement(total, {**self.rules, rule: after}, self.recycled_at, since)

    def recycle(self, at: float) -> Engagement:
        """Start qualifying afresh from ``at``: earlier points still show, but no longer count."""
        return Engagement(self.total, self.rules, at, Decayed())

    def value_at(self, at: float, half_life: float) -> float:
        return self.total.value_at(at, half_life)

    def qualifying_at(self, at: float, half_life: float) -> float:
        """The engagement the stage machine compares with its bar: since the latest recycle."""
        if self.recycled_at is None:
            return self.total.value_at(at, half_life)
        return self.since_recycle.value_at(at, half_life)

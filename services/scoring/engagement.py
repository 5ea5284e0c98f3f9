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
from typing import Any


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

    Immutable: adding returns a new value, so a lead state can be copied cheaply.
    """

    total: Decayed = Decayed()
    rules: Mapping[int, RuleEngagement] = field(default_factory=dict)
    """Keyed by the index of the rule in the model; only rules that ever scored."""

    def add(self, rule: int, points: float, at: float, half_life: float) -> Engagement:
        """Fold in one scored event of rule ``rule`` at ``at`` (seconds since the epoch)."""
        before = self.rules.get(rule, RuleEngagement())
        after = RuleEngagement(before.decayed.add(points, at, half_life), before.count + 1)
        return Engagement(self.total.add(points, at, half_life), {**self.rules, rule: after})

    def value_at(self, at: float, half_life: float) -> float:
        return self.total.value_at(at, half_life)

    def to_dict(self) -> dict[str, Any]:
        """Rules as ``[index, value, as_of, count]`` rows, in the order they first scored."""
        return {
            "total": [self.total.value, self.total.as_of],
            "rules": [
                (index, r.decayed.value, r.decayed.as_of, r.count)
                for index, r in self.rules.items()
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Engagement:
        """The inverse of :meth:`to_dict`; also reads the rules of a lead state in format 1,
        an object of ``{"<index>": [value, as_of, count]}``."""
        value, as_of = data["total"]
        rules = data["rules"]
        if isinstance(rules, Mapping):
            rules = [(index, *row) for index, row in rules.items()]
        return cls(
            total=Decayed(float(value), None if as_of is None else float(as_of)),
            rules={
                int(index): RuleEngagement(Decayed(float(v), float(at)), int(count))
                for index, v, at, count in rules
            },
        )

"""What scoring needs of a model for every event, built once when the model is loaded.

A model is frozen, so its rules can be looked up by event type, its labels worded and
its fits interned once, in an object the model holds (``ScoringModel.rulebook``), instead
of being searched or rebuilt per event or held in caches keyed by the model's identity.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

from pydantic import JsonValue

from services.scoring.lead import DerivedFit
from services.scoring.rules import (
    Contribution,
    engagement_label,
    engagement_rule_matches,
    fit_label,
    retired_label,
)

if TYPE_CHECKING:
    from services.scoring.model import EngagementRule, FitRule, ScoringModel

T = TypeVar("T")

MAX_INTERNED_FITS = 4096
"""Distinct sets of matching fit rules kept (at most 2 ** fit rules ever occur)."""


class RuleBook:
    """A model's rules by event type, their labels by id, and its interned fits."""

    __slots__ = (
        "_by_event",
        "_fits",
        "_labels",
        "_rank",
        "engagement_ids",
        "fit_rules",
        "half_life",
        "intent_events",
    )

    def __init__(self, model: ScoringModel) -> None:
        rules = model.engagement.rules
        by_event: dict[str, list[EngagementRule]] = {}
        for rule in rules:
            by_event.setdefault(rule.event, []).append(rule)
        self._by_event = {event: tuple(found) for event, found in by_event.items()}
        self._labels = {rule.id: engagement_label(rule) for rule in rules}
        self._rank = {rule.id: position for position, rule in enumerate(rules)}
        self._fits: dict[tuple[str, ...], DerivedFit] = {}
        self.engagement_ids = tuple(rule.id for rule in rules)
        """The engagement rule ids by position: how a changelog keyed by index is read."""
        self.fit_rules: tuple[tuple[FitRule, str], ...] = tuple(
            (rule, fit_label(rule)) for rule in model.fit.rules
        )
        self.half_life = model.engagement.half_life_seconds
        self.intent_events = frozenset(model.stages.opportunity.intent_events)

    @classmethod
    def of(cls, model: ScoringModel) -> RuleBook:
        return cls(model)

    def __eq__(self, other: object) -> bool:
        # derived from the model's fields, which the model compares itself
        return isinstance(other, RuleBook)

    __hash__ = None  # type: ignore[assignment]

    def engagement_rule(
        self, event_type: str, properties: Mapping[str, JsonValue]
    ) -> EngagementRule | None:
        """The FIRST engagement rule matching the event, ``None`` when none does."""
        for rule in self._by_event.get(event_type, ()):
            if engagement_rule_matches(rule, properties):
                return rule
        return None

    def in_model_order(self, rules: Mapping[str, T]) -> list[tuple[str, T]]:
        """Per-rule values in the model's order, rules it no longer has last (by id)."""
        if len(rules) < 2:
            return list(rules.items())
        last = len(self._rank)
        return sorted(rules.items(), key=lambda item: (self._rank.get(item[0], last), item[0]))

    def engagement_label(self, rule_id: str) -> str:
        label = self._labels.get(rule_id)
        return retired_label(rule_id) if label is None else label

    def interned_fit(self, contributions: tuple[Contribution, ...]) -> DerivedFit:
        """One shared :class:`DerivedFit` per set of matching rules (labels are unique)."""
        key = tuple(c["rule"] for c in contributions)
        derived = self._fits.get(key)
        if derived is None:
            if len(self._fits) >= MAX_INTERNED_FITS:
                self._fits.clear()
            points = float(sum(c["points"] for c in contributions))
            derived = self._fits[key] = DerivedFit(self, contributions, points)
        return derived

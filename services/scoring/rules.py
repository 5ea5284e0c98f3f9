"""Which rules of the model match an event or a lead's traits, and how each rule is named.

Events and traits come from many marketing platforms, so a trait may hold any
JSON value: comparisons never raise, a value of the wrong type simply does not
match (``employees: "many"`` is not ``>= 50``), and booleans are never numbers
(``true`` is not ``>= 1``, nor equal to ``1``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypedDict

import orjson
from pydantic import JsonValue

if TYPE_CHECKING:  # the model builds its rulebook from this module: no import cycle at run time
    from services.scoring.model import EngagementRule, FitRule, ScoringModel

_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "gte": operator.ge,
    "gt": operator.gt,
    "lte": operator.le,
    "lt": operator.lt,
}
_SYMBOLS = {
    "in": "in",
    "not_in": "not in",
    "equals": "=",
    "gte": ">=",
    "gt": ">",
    "lte": "<=",
    "lt": "<",
}


class Contribution(TypedDict):
    """How much one rule adds to a lead's score: the wire model
    :class:`~shared.events.RuleContribution` as a plain dict. One is built per engaged rule
    per event, and a dict is the cheapest thing to build and for orjson to encode."""

    rule: str
    axis: str  # "fit" or "engagement"
    points: float
    count: int


def match_engagement_rule(
    model: ScoringModel, event_type: str, properties: Mapping[str, JsonValue]
) -> EngagementRule | None:
    """The FIRST engagement rule matching the event, ``None`` when none does."""
    return model.rulebook.engagement_rule(event_type, properties)


def engagement_rule_matches(rule: EngagementRule, properties: Mapping[str, JsonValue]) -> bool:
    """Whether every ``where`` condition of a rule (of the event's type) holds."""
    return all(_where_holds(key, expected, properties) for key, expected in rule.where.items())


def fit_contributions(model: ScoringModel, traits: Mapping[str, JsonValue]) -> list[Contribution]:
    """One contribution per matching fit rule, in model order; their points sum to the fit."""
    return [
        Contribution(rule=label, axis="fit", points=float(rule.points), count=1)
        for rule, label in model.rulebook.fit_rules
        if fit_rule_matches(rule, traits)
    ]


def fit_rule_matches(rule: FitRule, traits: Mapping[str, JsonValue]) -> bool:
    """Whether the lead's traits satisfy the rule.

    A missing or null trait is unknown: only ``exists: false`` matches it (an
    unknown country is neither in nor not in a list of countries).
    """
    value = traits.get(rule.trait)
    if rule.exists is not None:
        return (value is not None) is rule.exists
    if value is None:
        return False
    if rule.in_ is not None:
        return any(same_json(value, option) for option in rule.in_)
    if rule.not_in is not None:
        return not any(same_json(value, option) for option in rule.not_in)
    if rule.operator == "equals":
        return same_json(value, rule.equals)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    bound: float = getattr(rule, rule.operator)
    return _COMPARISONS[rule.operator](value, bound)  # int vs float: exact, no overflow


def same_json(left: JsonValue, right: JsonValue) -> bool:
    """JSON equality: ``1 == 1.0``, but ``true`` is not ``1`` at any depth."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same_json, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same_json(left[k], right[k]) for k in left)
    return left == right


def fit_label(rule: FitRule) -> str:
    """``industry: industry in [software, saas]``: the rule's id, then what it checks."""
    if rule.exists is not None:
        return f"{rule.id}: {rule.trait} {'is set' if rule.exists else 'is not set'}"
    return f"{rule.id}: {rule.trait} {_SYMBOLS[rule.operator]} {_text(rule.operand)}"


def engagement_label(rule: EngagementRule) -> str:
    """``pricing-view: page.viewed where path_prefix=/pricing, max 3/day``."""
    label = f"{rule.id}: {rule.event}"
    if rule.where:
        label += " where " + ", ".join(f"{key}={_text(value)}" for key, value in rule.where.items())
    if rule.max_per_day is not None:
        label += f", max {rule.max_per_day}/day"
    return label


def retired_label(rule_id: str) -> str:
    """The label of engagement a lead earned under a rule the active model no longer has."""
    return f"{rule_id}: no longer in the model"


def format_number(value: float) -> str:
    """Points for people: ``75``, ``12.5``, ``39.97`` (two decimals at most, no float noise)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _where_holds(key: str, expected: JsonValue, properties: Mapping[str, JsonValue]) -> bool:
    if key == "path_prefix":
        path = properties.get("path")
        return isinstance(path, str) and isinstance(expected, str) and path.startswith(expected)
    return key in properties and same_json(properties[key], expected)


def _text(value: JsonValue) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + ", ".join(map(_text, value)) + "]"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format_number(value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()

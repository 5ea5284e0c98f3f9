"""Rule matching: first engagement rule wins; fit rules never crash on odd trait values."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import JsonValue

from services.scoring.model import FitRule, ScoringModel
from services.scoring.rules import (
    engagement_label,
    fit_contributions,
    fit_label,
    fit_rule_matches,
    format_number,
    match_engagement_rule,
    same_json,
)
from tests.scoring.conftest import ICP_TRAITS


def rule(**fields: Any) -> FitRule:
    return FitRule.model_validate({"id": "x-rule", "trait": "x", "points": 1, **fields})


@pytest.mark.parametrize(
    ("event_type", "properties", "expected"),
    [
        ("page.viewed", {"path": "/pricing"}, "pricing-view"),
        ("page.viewed", {"path": "/pricing/enterprise"}, "pricing-view"),
        ("page.viewed", {"path": "/blog/pricing"}, "page-view"),
        ("page.viewed", {}, "page-view"),
        ("page.viewed", {"path": 5}, "page-view"),
        ("email.opened", {"path": "/pricing"}, "email-open"),
        ("form.submitted", {}, "form-submit"),
        ("email.unsubscribed", {}, "unsubscribe"),
        ("lead.updated", {}, None),
        ("Page.Viewed", {"path": "/pricing"}, None),
    ],
)
def test_the_first_matching_engagement_rule_wins(
    model: ScoringModel, event_type: str, properties: dict[str, JsonValue], expected: str | None
) -> None:
    matched = match_engagement_rule(model, event_type, properties)
    assert (matched and matched.id) == expected


def test_where_keys_other_than_path_prefix_are_equalities(model: ScoringModel) -> None:
    data = model.model_dump(by_alias=True, exclude_none=True)
    data["engagement"]["rules"] = [
        {
            "id": "vip",
            "event": "email.clicked",
            "where": {"campaign": "nov", "vip": True},
            "points": 9,
        },
        {"id": "click", "event": "email.clicked", "points": 3},
    ]
    custom = ScoringModel.model_validate(data)

    def matched(properties: dict[str, JsonValue]) -> str | None:
        rule = match_engagement_rule(custom, "email.clicked", properties)
        return None if rule is None else rule.id

    assert matched({"campaign": "nov", "vip": True}) == "vip"
    assert matched({"campaign": "nov", "vip": 1}) == "click"
    assert matched({"campaign": "dec", "vip": True}) == "click"
    assert matched({"campaign": "nov"}) == "click"


def test_the_ideal_customer_profile_lead_fits_75(model: ScoringModel) -> None:
    contributions = fit_contributions(model, ICP_TRAITS)
    assert [(c["rule"], c["axis"], c["points"], c["count"]) for c in contributions] == [
        ("industry: industry in [software, saas, fintech, ecommerce]", "fit", 20, 1),
        ("company-size: employees >= 50", "fit", 15, 1),
        ("budget: budget_usd >= 10000", "fit", 20, 1),
        ("seniority: job_level in [c_level, vp, director, owner]", "fit", 20, 1),
    ]
    assert sum(c["points"] for c in contributions) == 75


def test_a_competitor_loses_100(model: ScoringModel) -> None:
    contributions = fit_contributions(model, {**ICP_TRAITS, "competitor": True})
    assert sum(c["points"] for c in contributions) == -25
    assert fit_contributions(model, {"competitor": 1}) == []
    assert fit_contributions(model, {"competitor": "true"}) == []


@pytest.mark.parametrize(
    "traits",
    [
        {"employees": "many"},
        {"employees": True},
        {"employees": None},
        {"employees": [500]},
        {"employees": {"min": 500}},
        {"budget_usd": "20000"},
        {"industry": ["saas"]},
        {"industry": {"name": "saas"}},
        {"industry": None},
        {"country": 1},
        {},
    ],
)
def test_values_of_the_wrong_type_do_not_match_and_do_not_crash(
    model: ScoringModel, traits: dict[str, JsonValue]
) -> None:
    assert fit_contributions(model, traits) == []


def test_numbers_compare_exactly_even_when_huge(model: ScoringModel) -> None:
    assert [c["points"] for c in fit_contributions(model, {"employees": 10**400})] == [15]
    assert [c["points"] for c in fit_contributions(model, {"employees": 50.0})] == [15]
    assert fit_contributions(model, {"employees": 49.999}) == []


@pytest.mark.parametrize(
    ("fields", "value", "matches"),
    [
        ({"gt": 10}, 10, False),
        ({"gt": 10}, 10.5, True),
        ({"gte": 10}, 10, True),
        ({"lt": 10}, 9, True),
        ({"lt": 10}, 10, False),
        ({"lte": 10}, 10, True),
        ({"lte": 10}, False, False),
        ({"lt": 10}, "5", False),
        ({"in": [1, "a"]}, 1.0, True),
        ({"in": [1, "a"]}, True, False),
        ({"not_in": ["KP", "IR"]}, "US", True),
        ({"not_in": ["KP", "IR"]}, "KP", False),
        ({"not_in": ["KP"]}, None, False),
        ({"equals": "x"}, "x", True),
        ({"equals": {"a": [1, True]}}, {"a": [1.0, True]}, True),
        ({"equals": {"a": [1, True]}}, {"a": [1, 1]}, False),
        ({"equals": False}, 0, False),
        ({"exists": True}, "", True),
        ({"exists": True}, None, False),
        ({"exists": False}, None, True),
        ({"exists": False}, 0, False),
    ],
)
def test_each_operator(fields: dict[str, Any], value: JsonValue, matches: bool) -> None:
    assert fit_rule_matches(rule(**fields), {"x": value}) is matches


def test_a_missing_trait_only_matches_exists_false() -> None:
    assert fit_rule_matches(rule(exists=False), {})
    others: list[dict[str, Any]] = [{"exists": True}, {"not_in": ["a"]}, {"in": ["a"]}, {"lt": 1}]
    for fields in others:
        assert not fit_rule_matches(rule(**fields), {})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60)
@given(value=json_values, fields=st.sampled_from([{"gte": 1}, {"lt": 1}, {"in": [1, "a"]}]))
def test_no_json_value_crashes_a_fit_rule(value: JsonValue, fields: dict[str, Any]) -> None:
    assert fit_rule_matches(rule(**fields), {"x": value}) in (True, False)


@settings(max_examples=60)
@given(value=json_values)
def test_same_json_is_reflexive(value: JsonValue) -> None:
    assert same_json(value, value)


def test_labels_are_readable_and_name_the_rule(model: ScoringModel) -> None:
    assert fit_label(model.fit.rules[5]) == "competitor: competitor = true"
    assert fit_label(rule(exists=True)) == "x-rule: x is set"
    assert fit_label(rule(not_in=["KP"])) == "x-rule: x not in [KP]"
    assert fit_label(rule(lt=2.5)) == "x-rule: x < 2.5"
    assert (
        engagement_label(model.engagement.rules[0])
        == "pricing-view: page.viewed where path_prefix=/pricing, max 3/day"
    )
    assert engagement_label(model.engagement.rules[6]) == "demo-request: demo.requested"


@pytest.mark.parametrize(
    ("value", "text"),
    [(75.0, "75"), (12.5, "12.5"), (39.996, "40"), (1 / 3, "0.33"), (-15.0, "-15"), (-0.001, "0")],
)
def test_numbers_are_formatted_for_people(value: float, text: str) -> None:
    assert format_number(value) == text

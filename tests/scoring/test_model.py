"""The model file: the default has the numbers of docs/architecture.md §2; bad ones say why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.scoring.model import DEFAULT_MODEL_PATH, ModelError, ScoringModel, load_model


def default_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    return data


def test_the_default_model_has_the_numbers_of_the_design() -> None:
    model = load_model()
    assert model.version == "default-1"
    assert model.engagement.half_life_days == 30
    assert model.engagement.half_life_seconds == 30 * 86_400
    rules = model.engagement.rules
    assert [(r.event, r.points, r.max_per_day) for r in rules] == [
        ("page.viewed", 5, 3),
        ("page.viewed", 1, 10),
        ("email.opened", 1, 5),
        ("email.clicked", 3, 10),
        ("form.submitted", 10, None),
        ("webinar.attended", 15, None),
        ("demo.requested", 30, None),
        ("email.unsubscribed", -15, None),
    ]
    assert rules[0].where == {"path_prefix": "/pricing"}
    fit = model.fit.rules
    assert [(r.trait, r.operator, r.operand, r.points) for r in fit] == [
        ("industry", "in", ["software", "saas", "fintech", "ecommerce"], 20),
        ("employees", "gte", 50, 15),
        ("country", "in", ["US", "CA", "GB", "DE", "FR", "NL", "AU"], 10),
        ("budget_usd", "gte", 10000, 20),
        ("job_level", "in", ["c_level", "vp", "director", "owner"], 20),
        ("competitor", "equals", True, -100),
    ]
    assert model.stages.prospect.fit_min == 50
    assert model.stages.opportunity.engagement_min == 40
    assert model.stages.opportunity.intent_events == ["demo.requested"]


def test_no_path_and_the_default_path_load_the_same_model() -> None:
    assert load_model(None) == load_model(DEFAULT_MODEL_PATH)


def test_the_model_as_served_by_the_api_loads_back_unchanged(tmp_path: Path) -> None:
    model = load_model()
    served = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert served["fit"]["rules"][0]["in"] == ["software", "saas", "fintech", "ecommerce"]
    path = tmp_path / "served.yaml"
    path.write_text(yaml.safe_dump(served))
    assert load_model(path) == model


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change to the default model: ``fit.rules.2.gte`` = value (``...`` deletes it)."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        if value is ...:
            del node[key]
        else:
            node[key] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("fit.rules.2.in", ...), "fit.rules[2]: exactly one operator is required, got none"),
        (_set("fit.rules.1.lt", 10), "fit.rules[1]: exactly one operator is required, got gte, lt"),
        (_set("fit.rules.0.in", None), "fit.rules[0]: in must not be null"),
        (_set("fit.rules.5.equals", None), "fit.rules[5]: equals must not be null"),
        (_set("fit.rules.1.gte", "many"), "fit.rules[1].gte: Input should be a valid number"),
        (_set("fit.rules.3.contains", 1), "fit.rules[3].contains: Extra inputs are not permitted"),
        (_set("fit.rules.0.trait", ...), "fit.rules[0].trait: Field required"),
        (_set("fit.rules.4.in", []), "fit.rules[4].in: List should have at least 1 item"),
        (
            _set("engagement.rules.0.points", "lots"),
            "engagement.rules[0].points: Input should be a valid number",
        ),
        (
            _set("engagement.rules.0.max_per_day", 0),
            "engagement.rules[0].max_per_day: Input should be greater than or equal to 1",
        ),
        (
            _set("engagement.rules.3.max_per_dy", 5),
            "engagement.rules[3].max_per_dy: Extra inputs are not permitted",
        ),
        (
            _set("engagement.rules.0.where", {"path_prefix": 5}),
            "engagement.rules[0].where: path_prefix must be a string",
        ),
        (
            _set("engagement.half_life_days", 0),
            "engagement.half_life_days: Input should be greater than 0",
        ),
        (
            _set("engagement.half_life_days", -3.5),
            "engagement.half_life_days: Input should be greater than 0",
        ),
        (_set("engagement.rules.2.id", ...), "engagement.rules[2].id: Field required"),
        (_set("fit.rules.1.id", ...), "fit.rules[1].id: Field required"),
        (
            _set("engagement.rules.1.id", "Page View"),
            "engagement.rules[1].id: String should match pattern",
        ),
        (
            _set("engagement.rules.3.id", "page-view"),
            "engagement.rules[3]: id 'page-view' is already the id of engagement.rules[1]",
        ),
        (
            _set("fit.rules.0.id", "webinar"),
            "fit.rules[0]: id 'webinar' is already the id of engagement.rules[5]",
        ),
        (_set("stages.prospect", ...), "stages.prospect: Field required"),
        (_set("version", 1), "version: Input should be a valid string"),
        (_set("owner", "ops"), "owner: Extra inputs are not permitted"),
    ],
)
def test_a_bad_model_names_the_file_the_rule_the_field_and_the_reason(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    data = default_data()
    change(data)
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ModelError) as exc:
        load_model(path)
    assert str(path) in str(exc.value)
    assert message in str(exc.value)


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    data = default_data()
    _set("fit.rules.2.in", ...)(data)
    _set("engagement.rules.0.points", "lots")(data)
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ModelError, match=r"engagement\.rules\[0\]\.points.*fit\.rules\[2\]: "):
        load_model(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping, got list"),
        ("", "must be a mapping, got NoneType"),
    ],
)
def test_a_file_that_is_not_a_model_at_all_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(text)
    with pytest.raises(ModelError, match=message):
        load_model(path)


def test_a_missing_file_is_a_model_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ModelError, match=r"nowhere\.yaml: cannot be read"):
        load_model(path)


def test_a_model_error_is_a_value_error() -> None:
    assert issubclass(ModelError, ValueError)


def test_the_model_is_immutable() -> None:
    model = load_model()
    with pytest.raises(ValueError, match="frozen"):
        model.version = "other"  # type: ignore[misc]


def test_operators_other_than_the_defaults_are_accepted() -> None:
    data = default_data()
    data["fit"]["rules"] = [
        {"id": "a", "trait": "country", "not_in": ["KP"], "points": 1},
        {"id": "b", "trait": "employees", "gt": 10, "points": 1},
        {"id": "c", "trait": "employees", "lte": 10, "points": 1},
        {"id": "d", "trait": "employees", "lt": 10.5, "points": 1},
        {"id": "e", "trait": "email", "exists": False, "points": -5},
    ]
    model = ScoringModel.model_validate(data)
    assert [r.operator for r in model.fit.rules] == ["not_in", "gt", "lte", "lt", "exists"]


def test_a_copied_model_scores_with_its_own_rules() -> None:
    model = load_model()
    rules = [r.model_copy(update={"points": 7}) for r in model.engagement.rules]
    copy = model.model_copy(
        update={"engagement": model.engagement.model_copy(update={"rules": rules})}
    )
    assert copy.rulebook is not model.rulebook
    matched = copy.rulebook.engagement_rule("form.submitted", {})
    assert matched is not None
    assert matched.points == 7

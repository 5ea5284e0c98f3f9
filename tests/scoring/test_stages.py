"""The stage machine: forward only and in one move; CRM events decide the rest."""

from __future__ import annotations

import pytest
from pydantic import JsonValue

from services.scoring.model import ScoringModel
from services.scoring.stages import DomainError, Move, automatic_move, explicit_move, next_move
from shared.events import Stage

LOW, FIT = 20.0, 75.0
"""Fit scores below and above the default ``fit_min`` of 50."""


@pytest.mark.parametrize(
    ("current", "fit", "engagement", "intent", "expected"),
    [
        (None, LOW, 0, None, Move(Stage.LEAD, "first event")),
        (None, LOW, 90, "demo.requested", Move(Stage.LEAD, "first event")),
        (None, 60, 0, None, Move(Stage.PROSPECT, "fit 60 >= 50")),
        (None, 50, 39.9, None, Move(Stage.PROSPECT, "fit 50 >= 50")),
        (
            None,
            FIT,
            40,
            None,
            Move(Stage.OPPORTUNITY, "fit 75 >= 50 and engagement 40 >= 40"),
        ),
        (
            None,
            FIT,
            30,
            "demo.requested",
            Move(Stage.OPPORTUNITY, "fit 75 >= 50 and intent event demo.requested"),
        ),
        (Stage.LEAD, LOW, 100, None, None),
        (Stage.LEAD, 60, 0, None, Move(Stage.PROSPECT, "fit 60 >= 50")),
        (
            Stage.LEAD,
            FIT,
            45.25,
            None,
            Move(Stage.OPPORTUNITY, "fit 75 >= 50 and engagement 45.25 >= 40"),
        ),
        (Stage.PROSPECT, FIT, 10, None, None),
        (Stage.PROSPECT, FIT, 40, None, Move(Stage.OPPORTUNITY, "engagement 40 >= 40")),
        (
            Stage.PROSPECT,
            FIT,
            0,
            "demo.requested",
            Move(Stage.OPPORTUNITY, "intent event demo.requested"),
        ),
        (Stage.PROSPECT, LOW, 0, None, None),
        (Stage.OPPORTUNITY, LOW, 0, None, None),
        (Stage.OPPORTUNITY, FIT, 100, None, None),
        (Stage.CUSTOMER, FIT, 100, "demo.requested", None),
        (Stage.DISQUALIFIED, FIT, 100, "demo.requested", None),
    ],
)
def test_automatic_moves(
    model: ScoringModel,
    current: Stage | None,
    fit: float,
    engagement: float,
    intent: str | None,
    expected: Move | None,
) -> None:
    assert automatic_move(current, (fit, engagement), intent, model) == expected


@pytest.mark.parametrize(
    ("event_type", "properties", "expected"),
    [
        ("deal.won", {}, Move(Stage.CUSTOMER, "deal.won")),
        ("deal.won", {"reason": "  "}, Move(Stage.CUSTOMER, "deal.won")),
        ("lead.disqualified", {}, Move(Stage.DISQUALIFIED, "lead.disqualified")),
        (
            "lead.disqualified",
            {"reason": "asked to be left alone"},
            Move(Stage.DISQUALIFIED, "lead.disqualified: asked to be left alone"),
        ),
        ("stage.set", {"stage": "lead"}, Move(Stage.LEAD, "stage.set")),
        (
            "stage.set",
            {"stage": "prospect", "reason": "budget frozen"},
            Move(Stage.PROSPECT, "stage.set: budget frozen"),
        ),
        ("page.viewed", {"stage": "customer"}, None),
        ("lead.updated", {}, None),
    ],
)
def test_explicit_moves(
    event_type: str, properties: dict[str, JsonValue], expected: Move | None
) -> None:
    assert explicit_move(event_type, properties) == expected


@pytest.mark.parametrize(
    "properties",
    [{}, {"stage": "won"}, {"stage": "Customer"}, {"stage": 3}, {"stage": None}],
)
def test_stage_set_to_no_valid_stage_names_the_property(
    properties: dict[str, JsonValue],
) -> None:
    with pytest.raises(DomainError, match=r"properties\.stage must be one of lead, prospect"):
        explicit_move("stage.set", properties)


def test_a_reason_that_is_not_text_is_refused() -> None:
    with pytest.raises(DomainError, match=r"deal\.won: properties\.reason must be a string"):
        explicit_move("deal.won", {"reason": 42})


def test_an_explicit_event_wins_over_the_scores(model: ScoringModel) -> None:
    move = next_move(
        Stage.PROSPECT, explicit_move("stage.set", {"stage": "lead"}), (FIT, 100), None, model
    )
    assert move == Move(Stage.LEAD, "stage.set")


def test_an_explicit_move_to_the_current_stage_is_no_move(model: ScoringModel) -> None:
    assert next_move(Stage.CUSTOMER, explicit_move("deal.won", {}), (FIT, 100), None, model) is None
    assert (
        next_move(Stage.LEAD, explicit_move("stage.set", {"stage": "lead"}), (FIT, 0), None, model)
        is None
    )


def test_an_explicit_first_event_is_the_one_move(model: ScoringModel) -> None:
    assert next_move(None, explicit_move("deal.won", {}), (FIT, 100), None, model) == Move(
        Stage.CUSTOMER, "deal.won"
    )


def test_other_events_move_automatically(model: ScoringModel) -> None:
    assert next_move(Stage.LEAD, explicit_move("page.viewed", {}), (60, 0), None, model) == Move(
        Stage.PROSPECT, "fit 60 >= 50"
    )

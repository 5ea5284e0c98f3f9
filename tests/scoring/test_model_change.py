"""Changing the model under leads that already hold state: rules are known by id, so adding,
removing or reordering rules never mislabels or mis-caps what a lead earned."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import yaml

from services.scoring.changelog import PartitionState, apply_record
from services.scoring.lead import LeadState
from services.scoring.model import DEFAULT_MODEL_PATH, ScoringModel
from services.scoring.scoring import apply_event
from services.scoring.state_records import lead_record
from shared.events import ScoreUpdate
from tests.scoring.conftest import ICP_TRAITS, T0, MakeEvent

PRICING = "pricing-view: page.viewed where path_prefix=/pricing, max 3/day"


def default_2() -> ScoringModel:
    """The default model with one rule inserted at the top of ``engagement.rules``."""
    data: dict[str, Any] = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    data["version"] = "default-2"
    new = {
        "id": "docs-view",
        "event": "page.viewed",
        "where": {"path_prefix": "/docs"},
        "points": 2,
    }
    data["engagement"]["rules"].insert(0, new)
    return ScoringModel.model_validate(data)


def restored(state: LeadState, model: ScoringModel, record: bytes | None = None) -> LeadState:
    """Through the changelog, as a new owner of the partition under ``model`` reads it."""
    partition = PartitionState()
    value = record if record is not None else lead_record(state)
    apply_record(partition, state.lead_id.encode(), value, model.rulebook.engagement_ids)
    return partition.leads[state.lead_id]


def breakdown(update: ScoreUpdate) -> dict[str, tuple[float, int]]:
    return {c.rule: (c.points, c.count) for c in update.breakdown if c.axis == "engagement"}


def test_inserting_a_rule_at_the_top_keeps_labels_points_and_caps(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    state: LeadState | None = None
    for event in [
        make_event("lead.updated", traits=ICP_TRAITS),
        *(make_event("page.viewed", path="/pricing") for _ in range(3)),
    ]:
        state = apply_event(state, event, model).state
    assert state is not None
    new_model = default_2()
    state = restored(state, new_model)

    # three more pricing views on the same UTC day, under the new model
    update = None
    for _ in range(3):
        outcome = apply_event(state, make_event("page.viewed", path="/pricing"), new_model)
        state, update = outcome.state, outcome.score_update
    assert update is not None
    assert update.model_version == "default-2"
    assert update.engagement == 15  # the 3-per-day cap was not bypassed
    assert breakdown(update) == {PRICING: (15, 3)}  # still the pricing rule's, by name
    # the inserted rule scores under its own name
    later = apply_event(state, make_event("page.viewed", path="/docs/api"), new_model)
    assert later.score_update is not None
    assert breakdown(later.score_update) == {
        "docs-view: page.viewed where path_prefix=/docs": (2, 1),
        PRICING: (15, 3),
    }


def test_a_format_2_changelog_of_default_1_maps_by_position_then_survives_the_insert(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    state: LeadState | None = None
    for event in [
        make_event("page.viewed", path="/pricing"),
        make_event("page.viewed", path="/pricing"),
        make_event("email.clicked", at=T0 + timedelta(hours=1)),
    ]:
        state = apply_event(state, event, model).state
    assert state is not None
    old = orjson.loads(lead_record(state))
    positions = {rule.id: index for index, rule in enumerate(model.engagement.rules)}
    old["format"] = 2
    old["engagement"]["rules"] = [[positions[r[0]], *r[1:]] for r in old["engagement"]["rules"]]
    old["caps"] = [[positions[c[0]], *c[1:]] for c in old["caps"]]
    # restored under the model it was written under, the rows get their rules' ids...
    upgraded = restored(state, model, orjson.dumps(old))
    assert upgraded == state
    # ...and, written again in format 3, they keep them under the next model
    under_new = restored(upgraded, default_2())
    outcome = apply_event(under_new, make_event("page.viewed", path="/pricing"), default_2())
    assert outcome.score_update is not None
    assert breakdown(outcome.score_update)[PRICING][1] == 3
    assert outcome.state.caps[("pricing-view", 20150)] == 3


def test_a_removed_rule_keeps_its_points_under_its_own_name(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    state = apply_event(None, make_event("webinar.attended"), model).state
    data: dict[str, Any] = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    data["engagement"]["rules"] = [r for r in data["engagement"]["rules"] if r["id"] != "webinar"]
    smaller = ScoringModel.model_validate(data)
    outcome = apply_event(restored(state, smaller), make_event("email.opened"), smaller)
    assert outcome.score_update is not None
    assert breakdown(outcome.score_update) == {
        "email-open: email.opened, max 5/day": (1, 1),
        "webinar: no longer in the model": (15, 1),
    }

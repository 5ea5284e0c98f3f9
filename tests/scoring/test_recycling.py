"""Recycling a lead: after a backward stage.set (or one with reason "recycle") only what
happens from then on qualifies it again; its score keeps showing its whole history."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.scoring.model import ScoringModel
from services.scoring.scoring import Outcome, apply_event
from shared.events import Event, Stage
from tests.scoring.conftest import ICP_TRAITS, T0, MakeEvent, Replay

HOUR = timedelta(hours=1)


def moves(outcomes: list[Outcome]) -> list[tuple[Stage | None, Stage, str]]:
    return [
        (o.stage_change.from_stage, o.stage_change.to_stage, o.stage_change.reason)
        for o in outcomes
        if o.stage_change is not None
    ]


def engaged_opportunity(make_event: MakeEvent) -> list[Event]:
    """An ICP lead that became an opportunity on its intent (a demo), engagement 40."""
    return [
        make_event("lead.updated", traits=ICP_TRAITS),
        make_event("demo.requested"),
        make_event("form.submitted"),
    ]


def test_one_email_opened_after_stage_set_lead_does_not_make_an_opportunity_again(
    make_event: MakeEvent, replay: Replay
) -> None:
    _, outcomes = replay(
        [
            *engaged_opportunity(make_event),
            make_event("stage.set", at=T0 + HOUR, stage="lead"),
            make_event("email.opened", at=T0 + 2 * HOUR),
        ]
    )
    assert moves(outcomes)[1:] == [
        (Stage.PROSPECT, Stage.OPPORTUNITY, "intent event demo.requested"),
        (Stage.OPPORTUNITY, Stage.LEAD, "stage.set"),
        (Stage.LEAD, Stage.PROSPECT, "fit 75 >= 50"),  # traits are kept: fit still holds
    ]
    last = outcomes[-1].score_update
    assert last is not None
    assert last.stage == Stage.PROSPECT
    assert last.engagement == pytest.approx(40 * 2 ** (-2 / 720) + 1)  # all its history


def test_a_recycled_lead_qualifies_again_on_engagement_earned_after_the_recycle(
    make_event: MakeEvent, replay: Replay
) -> None:
    _, outcomes = replay(
        [
            *engaged_opportunity(make_event),
            make_event("stage.set", at=T0 + HOUR, stage="prospect"),
            make_event("form.submitted", at=T0 - HOUR),  # late news from before: not counted
            make_event("webinar.attended", at=T0 + 2 * HOUR),
            make_event("form.submitted", at=T0 + 2 * HOUR),
            make_event("form.submitted", at=T0 + 2 * HOUR),
            make_event("webinar.attended", at=T0 + 2 * HOUR),
        ]
    )
    assert [m[1:] for m in moves(outcomes)[2:]] == [
        (Stage.PROSPECT, "stage.set"),
        (Stage.OPPORTUNITY, "engagement since recycle 50 >= 40"),
    ]
    assert [o.stage_change is not None for o in outcomes[4:]] == [False] * 4 + [True]


def test_an_intent_event_after_the_recycle_qualifies_one_before_does_not(
    make_event: MakeEvent, replay: Replay
) -> None:
    _, outcomes = replay(
        [
            *engaged_opportunity(make_event),
            make_event("deal.won", at=T0 + HOUR),
            make_event("stage.set", at=T0 + 2 * HOUR, stage="opportunity", reason="recycle"),
            make_event("stage.set", at=T0 + 3 * HOUR, stage="lead"),
            make_event("email.opened", at=T0 + 4 * HOUR),
            make_event("demo.requested", at=T0 + 5 * HOUR),
        ]
    )
    assert [m[1:] for m in moves(outcomes)[3:]] == [
        (Stage.OPPORTUNITY, "stage.set: recycle"),
        (Stage.LEAD, "stage.set"),
        (Stage.PROSPECT, "fit 75 >= 50"),
        (Stage.OPPORTUNITY, "intent event demo.requested"),
    ]


def test_a_recycle_reason_recycles_even_without_a_move(
    model: ScoringModel, make_event: MakeEvent, replay: Replay
) -> None:
    state, _ = replay([make_event("lead.updated"), make_event("demo.requested")])
    assert state is not None
    assert (state.stage, state.intent_seen) == (Stage.LEAD, True)
    same = apply_event(state, make_event("stage.set", stage="lead", reason=" Recycle "), model)
    assert same.stage_change is None
    assert not same.state.intent_seen
    assert same.state.engagement.recycled_at == T0.timestamp()


def test_forward_stage_sets_and_first_events_do_not_recycle(
    make_event: MakeEvent, replay: Replay
) -> None:
    state, _ = replay(
        [
            make_event("stage.set", stage="lead"),
            make_event("demo.requested", traits=ICP_TRAITS),
            make_event("stage.set", stage="customer"),
        ]
    )
    assert state is not None
    assert state.engagement.recycled_at is None
    assert state.intent_seen

"""apply_event end to end: the numbers of docs/architecture.md §2, stage rules, dedup, replays."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.scoring.model import ScoringModel
from services.scoring.scoring import DomainError, Outcome, SkipKind, apply_event, change_id
from services.scoring.state_records import lead_dict
from shared.events import Event, RuleContribution, Score, ScoreUpdate, Stage
from tests.scoring.conftest import ICP_TRAITS, T0, MakeEvent, Replay, event_streams

DAY = timedelta(days=1)
HALF_LIFE = timedelta(days=30)


def changes(outcomes: list[Outcome]) -> list[tuple[Stage | None, Stage, str]]:
    return [
        (o.stage_change.from_stage, o.stage_change.to_stage, o.stage_change.reason)
        for o in outcomes
        if o.stage_change is not None
    ]


def update(outcome: Outcome) -> ScoreUpdate:
    assert outcome.score_update is not None
    return outcome.score_update


def scores(outcome: Outcome) -> tuple[float, float, float, Stage]:
    u = update(outcome)
    return u.fit, u.engagement, u.total, u.stage


# --- the worked example of docs/architecture.md §2 -----------------------------------


def test_the_icp_lead_fits_75_and_becomes_a_prospect(make_event: MakeEvent, replay: Replay) -> None:
    _, outcomes = replay([make_event("lead.updated", traits=ICP_TRAITS)])
    assert scores(outcomes[0]) == (75, 0, 75, Stage.PROSPECT)
    assert changes(outcomes) == [(None, Stage.PROSPECT, "fit 75 >= 50")]


def test_engagement_of_exactly_40_makes_the_prospect_an_opportunity_and_caps_hold(
    model: ScoringModel, make_event: MakeEvent, replay: Replay
) -> None:
    state, outcomes = replay(
        [
            make_event("lead.updated", traits=ICP_TRAITS),
            make_event("form.submitted"),
            make_event("webinar.attended"),
            *(make_event("page.viewed", path="/pricing") for _ in range(3)),
        ]
    )
    assert [update(o).engagement for o in outcomes] == [0, 10, 25, 30, 35, 40]
    assert scores(outcomes[-1]) == (75, 40, 115, Stage.OPPORTUNITY)
    assert changes(outcomes) == [
        (None, Stage.PROSPECT, "fit 75 >= 50"),
        (Stage.PROSPECT, Stage.OPPORTUNITY, "engagement 40 >= 40"),
    ]
    change = outcomes[-1].stage_change
    assert change is not None
    assert change.score == Score(fit=75, engagement=40, total=115)

    assert state is not None
    pricing = make_event("page.viewed", path="/pricing")
    fourth = apply_event(state, pricing, model)
    assert fourth.skipped is None
    assert fourth.stage_change is None
    assert update(fourth).engagement == 40  # capped at 3 a day: adds nothing
    assert update(fourth).sequence == 7  # yet applied: counted, and remembered
    assert fourth.state.score_sequence == 7
    assert pricing.event_id in fourth.state.seen


def test_the_breakdown_explains_the_score(make_event: MakeEvent, replay: Replay) -> None:
    _, outcomes = replay(
        [
            make_event("lead.updated", traits=ICP_TRAITS),
            make_event("form.submitted"),
            *(make_event("page.viewed", path="/pricing") for _ in range(4)),
        ]
    )
    assert update(outcomes[-1]).breakdown == [
        RuleContribution(
            rule="industry: industry in [software, saas, fintech, ecommerce]",
            axis="fit",
            points=20,
        ),
        RuleContribution(rule="company-size: employees >= 50", axis="fit", points=15),
        RuleContribution(rule="budget: budget_usd >= 10000", axis="fit", points=20),
        RuleContribution(
            rule="seniority: job_level in [c_level, vp, director, owner]", axis="fit", points=20
        ),
        RuleContribution(
            rule="pricing-view: page.viewed where path_prefix=/pricing, max 3/day",
            axis="engagement",
            points=15,
            count=3,
        ),
        RuleContribution(rule="form-submit: form.submitted", axis="engagement", points=10),
    ]


# --- decay and caps ------------------------------------------------------------------


def test_engagement_halves_after_30_days_of_event_time(
    make_event: MakeEvent, replay: Replay
) -> None:
    _, outcomes = replay(
        [
            make_event("demo.requested"),
            make_event("form.submitted"),
            make_event("custom.thing", at=T0 + HALF_LIFE),  # scores 0, moves time on
            make_event("lead.updated", at=T0 + 2 * HALF_LIFE),
        ]
    )
    assert [update(o).engagement for o in outcomes] == [30, 40, 20, 10]
    assert update(outcomes[-1]).as_of == T0 + 2 * HALF_LIFE
    assert [(c.rule, c.points) for c in update(outcomes[-1]).breakdown] == [
        ("form-submit: form.submitted", 2.5),
        ("demo-request: demo.requested", 7.5),
    ]


def test_an_out_of_order_event_folds_in_with_its_own_time(
    make_event: MakeEvent, replay: Replay
) -> None:
    _, outcomes = replay(
        [
            make_event("form.submitted", at=T0 + HALF_LIFE),
            make_event("demo.requested", at=T0),  # arrives late
        ]
    )
    assert update(outcomes[-1]).engagement == 25  # 10 + 30 / 2
    assert update(outcomes[-1]).as_of == T0 + HALF_LIFE


def test_daily_caps_count_per_utc_day_and_reset_the_next_day(
    make_event: MakeEvent, replay: Replay
) -> None:
    late = T0.replace(hour=23)
    berlin = timezone(timedelta(hours=1))
    _, outcomes = replay(
        [
            *(make_event("page.viewed", path="/pricing", at=late) for _ in range(3)),
            # already the 4th in Berlin, but still the same UTC day: capped
            make_event("page.viewed", path="/pricing", at=late.astimezone(berlin)),
            make_event("page.viewed", path="/pricing", at=late + timedelta(hours=1)),
        ]
    )
    engagement = [update(o).engagement for o in outcomes]
    assert engagement[:4] == [5, 10, 15, 15]
    one_hour = 2 ** (-3600 / HALF_LIFE.total_seconds())
    assert engagement[4] == pytest.approx(15 * one_hour + 5, rel=1e-12)
    breakdown = update(outcomes[-1]).breakdown
    assert [(c.rule.split(":")[0], c.count) for c in breakdown] == [("pricing-view", 4)]


def test_a_capped_event_still_carries_its_traits(make_event: MakeEvent, replay: Replay) -> None:
    _, outcomes = replay(
        [
            *(make_event("page.viewed", path="/pricing") for _ in range(3)),
            make_event("page.viewed", path="/pricing", traits=ICP_TRAITS),
        ]
    )
    assert scores(outcomes[-1]) == (75, 15, 90, Stage.PROSPECT)


def test_unknown_event_types_score_nothing_but_are_applied(
    make_event: MakeEvent, replay: Replay
) -> None:
    state, outcomes = replay([make_event("form.submitted"), make_event("chat.started")])
    assert scores(outcomes[-1]) == (0, 10, 10, Stage.LEAD)
    assert update(outcomes[-1]).sequence == 2
    assert state is not None
    assert len(state.seen) == 2


def test_unsubscribing_takes_points_away(make_event: MakeEvent, replay: Replay) -> None:
    _, outcomes = replay([make_event("form.submitted"), make_event("email.unsubscribed")])
    assert update(outcomes[-1]).engagement == -5


# --- stages ---------------------------------------------------------------------------


def test_a_new_lead_is_announced_once(make_event: MakeEvent, replay: Replay) -> None:
    _, outcomes = replay([make_event("email.opened"), make_event("email.opened")])
    assert changes(outcomes) == [(None, Stage.LEAD, "first event")]
    change = outcomes[0].stage_change
    assert change is not None
    assert change.sequence == 1
    assert change.occurred_at == T0


def test_meeting_both_criteria_at_once_is_one_change_from_lead(
    make_event: MakeEvent, replay: Replay
) -> None:
    _, outcomes = replay(
        [
            make_event("webinar.attended"),
            make_event("webinar.attended"),
            make_event("form.submitted"),
            make_event("lead.updated", traits=ICP_TRAITS),
        ]
    )
    assert changes(outcomes) == [
        (None, Stage.LEAD, "first event"),
        (Stage.LEAD, Stage.OPPORTUNITY, "fit 75 >= 50 and engagement 40 >= 40"),
    ]
    assert [o.stage_change.sequence for o in outcomes if o.stage_change] == [1, 2]


def test_a_first_event_that_qualifies_is_one_change_from_none(
    make_event: MakeEvent, replay: Replay
) -> None:
    _, outcomes = replay([make_event("demo.requested", traits=ICP_TRAITS)])
    assert changes(outcomes) == [
        (None, Stage.OPPORTUNITY, "fit 75 >= 50 and intent event demo.requested")
    ]


def test_an_intent_event_counts_forever(make_event: MakeEvent, replay: Replay) -> None:
    _, outcomes = replay(
        [
            make_event("demo.requested"),
            make_event("lead.updated", at=T0 + 10 * HALF_LIFE, traits=ICP_TRAITS),
        ]
    )
    assert update(outcomes[-1]).engagement < 1
    assert changes(outcomes)[-1] == (
        Stage.LEAD,
        Stage.OPPORTUNITY,
        "fit 75 >= 50 and intent event demo.requested",
    )


def test_scores_falling_never_move_a_lead_back(make_event: MakeEvent, replay: Replay) -> None:
    _, outcomes = replay(
        [
            make_event("lead.updated", traits=ICP_TRAITS),
            make_event("lead.updated", at=T0 + DAY, traits={"competitor": True}),
        ]
    )
    assert scores(outcomes[-1]) == (-25, 0, -25, Stage.PROSPECT)
    assert outcomes[-1].stage_change is None


def test_deal_won_makes_a_customer_and_scores_no_longer_move_it(
    make_event: MakeEvent, replay: Replay
) -> None:
    _, outcomes = replay(
        [
            make_event("form.submitted"),
            make_event("deal.won", reason="signed"),
            make_event("demo.requested", traits=ICP_TRAITS),
        ]
    )
    assert changes(outcomes) == [
        (None, Stage.LEAD, "first event"),
        (Stage.LEAD, Stage.CUSTOMER, "deal.won: signed"),
    ]
    assert scores(outcomes[-1]) == (75, 40, 115, Stage.CUSTOMER)


def test_a_disqualified_lead_stays_disqualified(make_event: MakeEvent, replay: Replay) -> None:
    _, outcomes = replay(
        [
            make_event("lead.updated", traits=ICP_TRAITS),
            make_event("lead.disqualified"),
            make_event("demo.requested"),
            make_event("deal.won"),
        ]
    )
    assert changes(outcomes) == [
        (None, Stage.PROSPECT, "fit 75 >= 50"),
        (Stage.PROSPECT, Stage.DISQUALIFIED, "lead.disqualified"),
        (Stage.DISQUALIFIED, Stage.CUSTOMER, "deal.won"),
    ]


def test_stage_set_moves_back_and_automatic_moves_resume_on_the_next_event_from_scratch(
    make_event: MakeEvent, replay: Replay
) -> None:
    _, outcomes = replay(
        [
            make_event("demo.requested", traits=ICP_TRAITS),
            make_event("stage.set", stage="lead", reason="wrong contact"),
            make_event("email.opened"),
        ]
    )
    assert changes(outcomes) == [
        (None, Stage.OPPORTUNITY, "fit 75 >= 50 and intent event demo.requested"),
        (Stage.OPPORTUNITY, Stage.LEAD, "stage.set: wrong contact"),
        (Stage.LEAD, Stage.PROSPECT, "fit 75 >= 50"),  # recycled: the old intent is gone
    ]
    assert update(outcomes[1]).stage == Stage.LEAD  # the explicit event alone does not move it


def test_stage_set_to_the_current_stage_changes_nothing(
    make_event: MakeEvent, replay: Replay
) -> None:
    _, outcomes = replay([make_event("email.opened"), make_event("stage.set", stage="lead")])
    assert changes(outcomes) == [(None, Stage.LEAD, "first event")]
    assert update(outcomes[-1]).sequence == 2


def test_an_explicit_event_can_carry_traits(make_event: MakeEvent, replay: Replay) -> None:
    _, outcomes = replay([make_event("deal.won", traits=ICP_TRAITS)])
    assert changes(outcomes) == [(None, Stage.CUSTOMER, "deal.won")]
    assert scores(outcomes[0]) == (75, 0, 75, Stage.CUSTOMER)


def test_a_bad_stage_set_raises_and_leaves_the_state_alone(
    model: ScoringModel, make_event: MakeEvent, replay: Replay
) -> None:
    state, _ = replay([make_event("email.opened", traits=ICP_TRAITS)])
    assert state is not None
    before = lead_dict(state)
    with pytest.raises(ValidationError, match=r"properties\.stage"):
        make_event("stage.set", stage="won")  # the shared rule: ingest never accepts it
    valid = make_event("stage.set", stage="lead", traits={"x": 1})
    unchecked = valid.model_copy(update={"properties": {"stage": "won"}})  # skips validation
    with pytest.raises(DomainError, match=r"properties\.stage"):
        apply_event(state, unchecked, model)
    assert lead_dict(state) == before


def test_an_event_of_another_lead_is_refused(
    model: ScoringModel, make_event: MakeEvent, replay: Replay
) -> None:
    state, _ = replay([make_event("email.opened")])
    with pytest.raises(DomainError, match=r"applied to lead 'ada@example\.com'"):
        apply_event(state, make_event("email.opened", lead_id="bob@example.com"), model)


# --- outputs ----------------------------------------------------------------------------


def test_a_score_update_carries_identity_time_and_model(
    model: ScoringModel, make_event: MakeEvent, replay: Replay
) -> None:
    late = make_event("email.clicked", at=T0 - DAY)
    _, outcomes = replay([make_event("email.opened"), late])
    u = update(outcomes[-1])
    assert (u.lead_id, u.sequence, u.trigger_event_id) == ("ada@example.com", 2, late.event_id)
    assert u.as_of == T0  # the latest event time, not the late event's
    assert u.model_version == model.version == "default-1"


def test_a_stage_change_carries_a_deterministic_identity(
    make_event: MakeEvent, replay: Replay
) -> None:
    trigger = make_event("lead.updated", at=T0 - DAY, traits=ICP_TRAITS)
    _, outcomes = replay([make_event("email.opened"), trigger])
    change = outcomes[-1].stage_change
    assert change is not None
    assert change.sequence == 2
    assert change.change_id == change_id("ada@example.com", 2)
    assert uuid.UUID(change.change_id).version == 5
    assert change.change_id != change_id("ada@example.com", 1)
    assert change.change_id != change_id("bob@example.com", 2)
    assert change.trigger_event_id == trigger.event_id
    assert change.occurred_at == T0 - DAY  # the trigger's time
    assert change.model_version == "default-1"


def test_a_newer_trait_is_not_overwritten_by_an_older_event(
    make_event: MakeEvent, replay: Replay
) -> None:
    _, outcomes = replay(
        [
            make_event("lead.updated", at=T0, traits=ICP_TRAITS),
            make_event("lead.updated", at=T0 - DAY, traits={"industry": "retail"}),
        ]
    )
    assert update(outcomes[-1]).fit == 75


# --- de-duplication, horizon, purity -----------------------------------------------------


def test_a_duplicate_is_skipped_without_outputs(
    model: ScoringModel, make_event: MakeEvent, replay: Replay
) -> None:
    event = make_event("demo.requested")
    state, _ = replay([event, make_event("email.opened")])
    assert state is not None
    outcome = apply_event(state, event, model)
    assert outcome == Outcome(state, skipped=outcome.skipped)
    assert outcome.skipped is not None
    assert outcome.skipped.kind is SkipKind.DUPLICATE


def test_an_event_beyond_the_horizon_is_skipped(
    model: ScoringModel, make_event: MakeEvent, replay: Replay
) -> None:
    horizon = timedelta(days=30)
    state, _ = replay([make_event("email.opened", at=T0)])
    old = apply_event(state, make_event("form.submitted", at=T0 - horizon - DAY), model, horizon)
    assert old.state is state
    assert (old.score_update, old.stage_change) == (None, None)
    assert old.skipped is not None
    assert old.skipped.kind is SkipKind.TOO_OLD
    edge = apply_event(state, make_event("form.submitted", at=T0 - horizon), model, horizon)
    assert edge.skipped is None
    assert update(edge).engagement == 1 + 10 / 2  # one half-life back: half the points


def test_apply_event_never_changes_its_input(
    model: ScoringModel, make_event: MakeEvent, replay: Replay
) -> None:
    state, _ = replay([make_event("page.viewed", path="/pricing", traits={"industry": "saas"})])
    assert state is not None
    before = lead_dict(state)
    apply_event(
        state, make_event("page.viewed", path="/pricing", at=T0 + 40 * DAY, traits={}), model
    )
    assert lead_dict(state) == before


def test_memory_stays_bounded_over_a_long_stream(make_event: MakeEvent, replay: Replay) -> None:
    events = [make_event("page.viewed", path="/pricing", at=T0 + i * DAY) for i in range(100)]
    state, outcomes = replay(events, horizon=timedelta(days=10))
    assert state is not None
    assert len(state.seen) == 11
    assert len(state.caps) == 11
    assert update(outcomes[-1]).sequence == 100


@settings(max_examples=25, deadline=None)
@given(events=event_streams(), data=st.data())
def test_duplicates_change_nothing(
    model: ScoringModel, replay: Replay, events: list[Event], data: st.DataObject
) -> None:
    unique = [e for i, e in enumerate(events) if e.event_id not in {x.event_id for x in events[:i]}]
    retried = list(unique)
    for _ in range(data.draw(st.integers(0, 5))):
        index = data.draw(st.integers(1, len(retried)))
        retried.insert(index, data.draw(st.sampled_from(retried[:index])))
    state_a, plain = replay(unique)
    state_b, with_retries = replay(retried)
    applied = [o for o in with_retries if o.skipped is None]
    assert [(o.score_update, o.stage_change) for o in applied] == [
        (o.score_update, o.stage_change) for o in plain if o.skipped is None
    ]
    assert state_a == state_b


@settings(max_examples=25, deadline=None)
@given(events=event_streams())
def test_a_replay_gives_identical_outputs(
    model: ScoringModel, replay: Replay, events: list[Event]
) -> None:
    def run() -> list[bytes]:
        _, outcomes = replay(events)
        return [
            b""
            if o.skipped
            else update(o).model_dump_json().encode()
            + (o.stage_change.model_dump_json().encode() if o.stage_change else b"")
            for o in outcomes
        ]

    assert run() == run()


@settings(max_examples=25, deadline=None)
@given(events=event_streams(max_size=15))
def test_stage_change_sequences_are_gapless(replay: Replay, events: list[Event]) -> None:
    state, outcomes = replay(events)
    sequences = [o.stage_change.sequence for o in outcomes if o.stage_change is not None]
    assert sequences == list(range(1, len(sequences) + 1))
    assert state is not None
    assert state.change_sequence == len(sequences)
    assert [update(o).sequence for o in outcomes if o.score_update] == list(
        range(1, state.score_sequence + 1)
    )


@settings(max_examples=25, deadline=None)
@given(
    kinds=st.lists(
        st.sampled_from(["form.submitted", "webinar.attended", "demo.requested", "email.clicked"]),
        min_size=1,
        max_size=9,
    ),
    minutes=st.lists(st.integers(0, 20 * 24 * 60), min_size=9, max_size=9),
    order=st.randoms(use_true_random=False),
)
def test_engagement_does_not_depend_on_arrival_order(
    make_event: MakeEvent,
    replay: Replay,
    kinds: list[str],
    minutes: list[int],
    order: random.Random,
) -> None:
    times = [T0 + timedelta(minutes=m) for m in minutes]
    events = [make_event(kind, at=at) for kind, at in zip(kinds, times[: len(kinds)], strict=True)]
    shuffled = list(events)
    order.shuffle(shuffled)
    a, b = update(replay(events)[1][-1]), update(replay(shuffled)[1][-1])
    assert a.as_of == b.as_of
    assert a.engagement == pytest.approx(b.engagement, rel=1e-9)
    assert a.fit == b.fit


@settings(max_examples=50, deadline=None)
@given(events=event_streams())
def test_the_worker_encoding_is_the_wire_model_byte_for_byte(
    replay: Replay, events: list[Event]
) -> None:
    _, outcomes = replay(events)
    for outcome in outcomes:
        if outcome.score is not None:
            wire = outcome.score.to_model()
            assert outcome.score.to_json() == wire.model_dump_json().encode()
            assert ScoreUpdate.model_validate_json(outcome.score.to_json()) == wire


@settings(max_examples=25, deadline=None)
@given(events=event_streams())
def test_in_place_scoring_gives_the_same_outcomes(
    model: ScoringModel, replay: Replay, events: list[Event]
) -> None:
    copied, outcomes = replay(events)
    state = None
    for event, expected in zip(events, outcomes, strict=True):
        outcome = apply_event(state, event, model, in_place=True)
        assert outcome.state is (state or outcome.state)  # the same object, changed
        assert (outcome.score, outcome.stage_change, outcome.skipped) == (
            expected.score,
            expected.stage_change,
            expected.skipped,
        )
        state = outcome.state
    assert state == copied

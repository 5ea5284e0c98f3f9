"""A lead's state: latest traits win, memory stays bounded, and it survives the changelog."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings

from services.scoring.lead import DEFAULT_HORIZON, LeadState, Trait
from services.scoring.model import ScoringModel
from services.scoring.scoring import apply_event
from shared.events import Event, Stage, format_time
from tests.scoring.conftest import T0, MakeEvent, event_streams

HOUR = timedelta(hours=1)


def test_the_latest_event_time_wins_per_trait() -> None:
    lead = LeadState("ada")
    lead.merge_traits({"industry": "saas", "employees": 200}, T0)
    lead.merge_traits({"industry": "retail"}, T0 - HOUR)  # late, older news
    lead.merge_traits({"employees": 300}, T0 + HOUR)
    assert lead.trait_values() == {"industry": "saas", "employees": 300}
    assert lead.traits["employees"] == Trait(300, T0 + HOUR)


def test_on_a_tie_the_later_applied_event_wins() -> None:
    lead = LeadState("ada")
    lead.merge_traits({"industry": "saas"}, T0)
    lead.merge_traits({"industry": "fintech"}, T0)
    assert lead.trait_values() == {"industry": "fintech"}


def test_a_null_trait_clears_the_value_and_still_beats_older_events() -> None:
    lead = LeadState("ada")
    lead.merge_traits({"competitor": True}, T0)
    lead.merge_traits({"competitor": None}, T0 + HOUR)
    lead.merge_traits({"competitor": True}, T0)  # a retry of the old value, arriving late
    assert lead.trait_values() == {"competitor": None}


def test_cap_slots_run_out_per_rule_and_day() -> None:
    lead = LeadState("ada")
    day = date(2025, 3, 3)
    assert [lead.take_cap_slot(0, day, 3) for _ in range(4)] == [True, True, True, False]
    assert lead.take_cap_slot(1, day, 3)
    assert lead.take_cap_slot(0, day + timedelta(days=1), 3)
    assert lead.caps == {(0, day): 3, (1, day): 1, (0, date(2025, 3, 4)): 1}


def test_duplicates_and_events_beyond_the_horizon_are_skipped_with_a_reason() -> None:
    lead = LeadState("ada")
    lead.record("e-1", T0, DEFAULT_HORIZON)
    assert lead.skip_reason("e-2", T0, DEFAULT_HORIZON) is None
    assert "duplicate" in (lead.skip_reason("e-1", T0, DEFAULT_HORIZON) or "")
    edge = T0 - DEFAULT_HORIZON
    assert lead.skip_reason("e-2", edge, DEFAULT_HORIZON) is None
    too_old = lead.skip_reason("e-2", edge - timedelta(microseconds=1), DEFAULT_HORIZON)
    assert too_old is not None
    assert too_old.startswith("too old: 2025-02-01T09:59:59.999999Z is more than 30 days")


def test_old_ids_and_cap_counters_are_forgotten_as_time_moves_on() -> None:
    lead = LeadState("ada")
    horizon = timedelta(days=2)
    lead.record("e-1", T0, horizon)
    lead.take_cap_slot(0, T0.date(), 3)
    lead.record("e-2", T0 + timedelta(days=1), horizon)
    assert set(lead.seen) == {"e-1", "e-2"}
    assert lead.record("e-3", T0 + timedelta(days=2, hours=1), horizon) == T0 + timedelta(
        days=2, hours=1
    )
    assert set(lead.seen) == {"e-2", "e-3"}
    assert lead.caps == {(0, T0.date()): 1}  # its day still overlaps the horizon
    lead.record("e-4", T0 + timedelta(days=3), horizon)
    assert lead.caps == {}


def test_an_older_event_does_not_move_as_of_back() -> None:
    lead = LeadState("ada")
    lead.record("e-1", T0, DEFAULT_HORIZON)
    assert lead.record("e-2", T0 - HOUR, DEFAULT_HORIZON) == T0
    assert lead.as_of == T0
    assert set(lead.seen) == {"e-1", "e-2"}


def test_a_copy_is_independent() -> None:
    lead = LeadState("ada")
    lead.merge_traits({"industry": "saas"}, T0)
    copy = lead.copy()
    copy.merge_traits({"industry": "retail"}, T0 + HOUR)
    copy.record("e-1", T0, DEFAULT_HORIZON)
    copy.take_cap_slot(0, T0.date(), 1)
    assert lead == LeadState("ada", traits={"industry": Trait("saas", T0)})


def test_the_dict_form_is_plain_json(model: ScoringModel, make_event: MakeEvent) -> None:
    state = apply_event(None, make_event(path="/pricing", traits={"industry": "saas"}), model).state
    data = state.to_dict()
    assert orjson.loads(orjson.dumps(data)) == data
    assert data["lead_id"] == "ada@example.com"
    assert data["stage"] == "lead"
    assert data["as_of"] == "2025-03-03T10:00:00Z"
    assert data["traits"] == {"industry": ["saas", "2025-03-03T10:00:00Z"]}
    assert data["caps"] == [[0, "2025-03-03", 1]]


@settings(max_examples=25, deadline=None)
@given(events=event_streams())
def test_any_state_round_trips_through_the_changelog(
    model: ScoringModel, events: list[Event]
) -> None:
    state: LeadState | None = None
    for event in events:
        outcome = apply_event(state, event, model)
        state = outcome.state
        restored = LeadState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
        assert restored == state
        assert restored.to_dict() == state.to_dict()


def test_an_unknown_layout_is_refused() -> None:
    data = LeadState("ada", stage=Stage.LEAD).to_dict()
    data["format"] = 99
    with pytest.raises(ValueError, match="unknown lead state format 99"):
        LeadState.from_dict(data)


def test_times_come_back_in_utc() -> None:
    state = LeadState("ada", as_of=datetime(2025, 3, 3, 12, 0, 0, 123456, tzinfo=UTC))
    assert LeadState.from_dict(state.to_dict()).as_of == state.as_of


@settings(max_examples=25, deadline=None)
@given(events=event_streams())
def test_the_changelog_record_is_the_dict_form_in_json(
    model: ScoringModel, events: list[Event]
) -> None:
    state: LeadState | None = None
    for event in events:
        state = apply_event(state, event, model).state
        data = state.to_dict()
        assert data["seen"] == {event_id: format_time(at) for event_id, at in state.seen.items()}
        assert data["traits"] == {
            n: [t.value, format_time(t.set_at)] for n, t in state.traits.items()
        }
        assert state.to_json() == orjson.dumps(data)

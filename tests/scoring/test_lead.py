"""A lead's state: latest traits win, memory stays bounded, and it survives the changelog."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings

from services.scoring.lead import (
    DEFAULT_HORIZON,
    LeadState,
    SkipKind,
    Trait,
    from_micros,
    micros,
    utc_day,
)
from services.scoring.model import ScoringModel, load_model
from services.scoring.scoring import apply_event
from services.scoring.state_records import lead_dict, lead_record, read_lead
from shared.events import Event, Stage, format_time
from tests.scoring.conftest import T0, MakeEvent, event_streams

HOUR = timedelta(hours=1)
IDS = load_model().rulebook.engagement_ids
"""What the rule positions of a format-1 or format-2 record stand for under the default model."""


def day(on: date) -> int:
    return (on - date(1970, 1, 1)).days


def test_the_latest_event_time_wins_per_trait() -> None:
    lead = LeadState("ada")
    lead.merge_traits({"industry": "saas", "employees": 200}, T0)
    lead.merge_traits({"industry": "retail"}, T0 - HOUR)  # late, older news
    lead.merge_traits({"employees": 300}, T0 + HOUR)
    assert lead.trait_values() == {"industry": "saas", "employees": 300}
    assert lead.traits["employees"] == Trait(300, micros(T0 + HOUR))


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
    monday = day(date(2025, 3, 3))
    assert [lead.take_cap_slot("r0", monday, 3) for _ in range(4)] == [True, True, True, False]
    assert lead.take_cap_slot("r1", monday, 3)
    assert lead.take_cap_slot("r0", monday + 1, 3)
    assert lead.caps == {("r0", monday): 3, ("r1", monday): 1, ("r0", day(date(2025, 3, 4))): 1}


def test_days_and_times_are_counted_in_utc_from_the_epoch() -> None:
    assert micros(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC)) == 1_000_005
    assert micros(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == -1
    assert utc_day(micros(T0)) == day(T0.date())
    assert utc_day(-1) == -1  # the day before the epoch, not day 0
    late_in_new_york = datetime(2025, 3, 3, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert utc_day(micros(late_in_new_york)) == day(date(2025, 3, 4))


def test_duplicates_and_events_beyond_the_horizon_are_skipped_with_a_reason() -> None:
    lead = LeadState("ada")
    lead.record("e-1", T0, DEFAULT_HORIZON)
    assert lead.skip_reason("e-2", T0, DEFAULT_HORIZON) is None
    duplicate = lead.skip_reason("e-1", T0, DEFAULT_HORIZON)
    assert duplicate is not None
    assert duplicate.kind is SkipKind.DUPLICATE
    assert "duplicate" in duplicate.reason
    edge = T0 - DEFAULT_HORIZON
    assert lead.skip_reason("e-2", edge, DEFAULT_HORIZON) is None
    too_old = lead.skip_reason("e-2", edge - timedelta(microseconds=1), DEFAULT_HORIZON)
    assert too_old is not None
    assert too_old.kind is SkipKind.TOO_OLD
    assert too_old.reason.startswith("too old: 2025-02-01T09:59:59.999999Z is more than 30 days")


def test_old_ids_and_cap_counters_are_forgotten_as_time_moves_on() -> None:
    lead = LeadState("ada")
    horizon = timedelta(days=2)
    lead.record("e-1", T0, horizon)
    lead.take_cap_slot("r0", day(T0.date()), 3)
    lead.record("e-2", T0 + timedelta(days=1), horizon)
    assert set(lead.seen) == {"e-1", "e-2"}
    assert lead.record("e-3", T0 + timedelta(days=2, hours=1), horizon) == T0 + timedelta(
        days=2, hours=1
    )
    assert set(lead.seen) == {"e-2", "e-3"}
    assert lead.caps == {("r0", day(T0.date())): 1}  # its day still overlaps the horizon
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
    copy.take_cap_slot("r0", day(T0.date()), 1)
    assert lead == LeadState("ada", traits={"industry": Trait("saas", micros(T0))})


def test_the_dict_form_is_plain_json(model: ScoringModel, make_event: MakeEvent) -> None:
    event = make_event(path="/pricing", traits={"industry": "saas"}, event_id="e-1")
    state = apply_event(None, event, model).state
    data = lead_dict(state)
    assert orjson.loads(orjson.dumps(data)) == data
    assert data["lead_id"] == "ada@example.com"
    assert data["stage"] == "lead"
    assert data["as_of"] == "2025-03-03T10:00:00Z"
    assert data["format"] == 3
    assert data["traits"] == {"industry": ["saas", 1_740_996_000_000_000]}  # T0, in µs
    assert data["caps"] == [["pricing-view", day(date(2025, 3, 3)), 1]]
    assert data["seen"] == {"e-1": 1_740_996_000_000_000}


@settings(max_examples=25, deadline=None)
@given(events=event_streams())
def test_any_state_round_trips_through_the_changelog(
    model: ScoringModel, events: list[Event]
) -> None:
    state: LeadState | None = None
    for event in events:
        outcome = apply_event(state, event, model)
        state = outcome.state
        restored = read_lead(orjson.loads(orjson.dumps(lead_dict(state))))
        assert restored == state
        assert lead_dict(restored) == lead_dict(state)


def test_an_unknown_layout_is_refused() -> None:
    data = lead_dict(LeadState("ada", stage=Stage.LEAD))
    data["format"] = 99
    with pytest.raises(ValueError, match="unknown lead state format 99"):
        read_lead(data)


def test_times_come_back_in_utc() -> None:
    state = LeadState("ada", as_of=datetime(2025, 3, 3, 12, 0, 0, 123456, tzinfo=UTC))
    assert read_lead(lead_dict(state)).as_of == state.as_of


@settings(max_examples=25, deadline=None)
@given(events=event_streams())
def test_the_changelog_record_is_the_dict_form_in_json(
    model: ScoringModel, events: list[Event]
) -> None:
    state: LeadState | None = None
    for event in events:
        state = apply_event(state, event, model).state
        data = lead_dict(state)
        assert data["seen"] == state.seen
        assert data["traits"] == {n: [t.value, t.set_at_us] for n, t in state.traits.items()}
        assert data["as_of"] == format_time(state.as_of) if state.as_of else data["as_of"] is None
        assert lead_record(state) == orjson.dumps(data)


FORMAT_1_RECORD = (
    b'{"format":1,"lead_id":"ada@example.com","stage":"lead","as_of":"2025-03-04T12:00:00.000007Z",'
    b'"traits":{"industry":["saas","2025-03-03T10:00:00Z"],"employees":[300,"2025-03-03T11:00:00Z"]},'
    b'"engagement":{"total":[12.757500254911786,1741089600.000007],"rules":{'
    b'"0":[9.995188794168918,1740999600.0,2],"3":[3.0,1741089600.000007,1]}},'
    b'"intent_event":null,"caps":[[0,"2025-03-03",2],[3,"2025-03-04",1]],'
    b'"seen":{"e-1":"2025-03-03T10:00:00Z","e-2":"2025-03-04T12:00:00.000007Z",'
    b'"e-3":"2025-03-03T11:00:00Z"},"score_sequence":3,"change_sequence":1}'
)
"""What the previous version of leadflow wrote to the changelog after the events of
:func:`test_a_changelog_written_in_format_1_restores_the_same_state`, byte for byte."""


def test_a_changelog_written_in_format_1_restores_the_same_state(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    events = [
        make_event(path="/pricing", traits={"industry": "saas", "employees": 200}, event_id="e-1"),
        make_event("email.clicked", at=T0 + timedelta(hours=26, microseconds=7), event_id="e-2"),
        make_event(at=T0 + HOUR, path="/pricing", traits={"employees": 300}, event_id="e-3"),
    ]
    state: LeadState | None = None
    for event in events:
        state = apply_event(state, event, model).state
    assert state is not None
    restored = read_lead(orjson.loads(FORMAT_1_RECORD), IDS)
    assert restored == state
    assert lead_dict(restored)["format"] == 3  # written in the new layout from then on
    # and it goes on scoring as if it had never been through the changelog
    later = make_event(at=T0 + timedelta(days=1), path="/pricing", event_id="e-4")
    assert apply_event(restored, later, model) == apply_event(state, later, model)


def _in_format_1(state: LeadState) -> dict[str, Any]:
    """A state laid out as format 1 was: times as RFC 3339, days as ISO dates, engagement
    rules keyed by their index as text."""

    def text(at_us: int) -> str:
        return format_time(from_micros(at_us))

    engagement = state.engagement
    return {
        "format": 1,
        "lead_id": state.lead_id,
        "stage": state.stage,
        "as_of": None if state.as_of is None else format_time(state.as_of),
        "traits": {n: [t.value, text(t.set_at_us)] for n, t in state.traits.items()},
        "engagement": {
            "total": [engagement.total.value, engagement.total.as_of],
            "rules": {
                str(IDS.index(rule_id)): [r.decayed.value, r.decayed.as_of, r.count]
                for rule_id, r in engagement.rules.items()
            },
        },
        "intent_event": state.intent_event,
        "caps": [
            [IDS.index(rule), (date(1970, 1, 1) + timedelta(days=day)).isoformat(), n]
            for (rule, day), n in state.caps.items()
        ],
        "seen": {event_id: text(at) for event_id, at in state.seen.items()},
        "score_sequence": state.score_sequence,
        "change_sequence": state.change_sequence,
    }


@settings(max_examples=25, deadline=None)
@given(events=event_streams())
def test_any_state_in_format_1_restores_the_same(model: ScoringModel, events: list[Event]) -> None:
    state: LeadState | None = None
    for event in events:
        state = apply_event(state, event, model).state
        if state.engagement.recycled_at is not None:
            continue  # recycling came after format 1: no such record exists
        legacy = orjson.loads(orjson.dumps(_in_format_1(state)))
        assert read_lead(legacy, IDS) == state


FORMAT_2_RECORD = (
    b'{"format":2,"lead_id":"ada@example.com","stage":"lead","as_of":"2025-03-04T12:00:00.000007Z",'
    b'"traits":{"industry":["saas",1740996000000000],"employees":[300,1740999600000000]},'
    b'"engagement":{"total":[12.757500254911786,1741089600.000007],"rules":['
    b"[0,9.995188794168918,1740999600.0,2],[3,3.0,1741089600.000007,1]]},"
    b'"intent_event":null,"caps":[[0,20150,2],[3,20151,1]],'
    b'"seen":{"e-1":1740996000000000,"e-2":1741089600000007,"e-3":1740999600000000},'
    b'"score_sequence":3,"change_sequence":1}'
)
"""What the previous version wrote after the same events as :data:`FORMAT_1_RECORD`."""


def test_a_changelog_written_in_format_2_restores_keyed_by_the_rule_ids(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    restored = read_lead(orjson.loads(FORMAT_2_RECORD), IDS)
    assert restored == read_lead(orjson.loads(FORMAT_1_RECORD), IDS)
    assert set(restored.engagement.rules) == {"pricing-view", "email-click"}
    assert restored.caps == {
        ("pricing-view", day(date(2025, 3, 3))): 2,
        ("email-click", day(date(2025, 3, 4))): 1,
    }
    data = lead_dict(restored)
    assert data["format"] == 3
    assert [row[0] for row in data["engagement"]["rules"]] == ["pricing-view", "email-click"]


def test_a_rule_index_the_restoring_model_lacks_is_kept_as_a_retired_rule() -> None:
    restored = read_lead(orjson.loads(FORMAT_2_RECORD), IDS[:1])
    assert set(restored.engagement.rules) == {"pricing-view", "rule-3"}

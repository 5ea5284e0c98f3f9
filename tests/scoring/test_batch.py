"""The pure batch scoring, without a broker: what a batch of records gives, and that it is
the event-by-event fold of the domain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import orjson
from hypothesis import given, settings

from services.scoring.batch import Refusal, score_batch
from services.scoring.lead import LeadState
from services.scoring.model import ScoringModel
from services.scoring.scoring import apply_event
from shared.events import LEAD_ERASED, Event
from tests.scoring.conftest import ICP_TRAITS, T0, MakeEvent, event_streams


@dataclass(frozen=True)
class Record:
    offset: int
    value: bytes | None
    key: bytes | None = b"ada@example.com"
    topic: str = "t.events"
    partition: int = 0


def records(events: list[Event], start: int = 0) -> list[Record]:
    return [Record(start + i, e.to_json(), e.lead_id.encode()) for i, e in enumerate(events)]


def test_a_batch_scores_its_events_and_keeps_the_new_states(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    known: dict[str, LeadState] = {}
    events = [make_event("lead.updated", traits=ICP_TRAITS), make_event("demo.requested")]
    result = score_batch(records(events), known, model)
    assert [(s.lead_id, s.score.sequence) for s in result.scored] == [
        ("ada@example.com", 1),
        ("ada@example.com", 2),
    ]
    assert [s.stage_change.to_stage for s in result.scored if s.stage_change] == [
        "prospect",
        "opportunity",
    ]
    assert result.applied_offset == 1
    assert known == result.leads
    assert known["ada@example.com"].score_sequence == 2


def test_refused_records_are_typed_and_the_rest_flows(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    known: dict[str, LeadState] = {}
    recent, late = make_event("email.clicked"), make_event("email.clicked", at=T0 - timedelta(40))
    batch = [
        Record(0, b"{not json"),
        Record(1, None),
        *records([recent, late, recent], start=2),
    ]
    result = score_batch(batch, known, model)
    assert [(r.record.offset, r.refusal) for r in result.refused] == [
        (0, Refusal.INVALID),
        (1, Refusal.INVALID),
        (3, Refusal.TOO_OLD),
    ]
    assert result.refused[0].reason.startswith("ValidationError: ")
    assert result.refused[2].reason.startswith("too old: ")
    assert [s.score.trigger_event_id for s in result.scored] == [recent.event_id]
    assert (result.duplicates, result.applied_offset) == (1, 4)


def test_records_already_scored_are_ignored(model: ScoringModel, make_event: MakeEvent) -> None:
    known: dict[str, LeadState] = {}
    events = [make_event("email.opened"), make_event("email.opened")]
    result = score_batch(records(events), known, model, applied_offset=0)
    assert (result.replayed, len(result.scored), result.applied_offset) == (1, 1, 1)


def test_an_erasure_drops_the_lead_and_what_the_batch_scored_for_it(
    model: ScoringModel, make_event: MakeEvent
) -> None:
    first = make_event("lead.updated", traits=ICP_TRAITS)
    bob = make_event("email.opened", lead_id="bob@example.com")
    known: dict[str, LeadState] = {}
    score_batch(records([first]), known, model)
    erase = make_event(LEAD_ERASED)
    result = score_batch(records([make_event("email.opened"), bob, erase], start=1), known, model)
    assert [s.lead_id for s in result.scored] == ["bob@example.com"]
    assert [e.event_id for e in result.erased] == [erase.event_id]
    assert set(known) == set(result.leads) == {"bob@example.com"}
    again = score_batch(records([first], start=4), known, model)
    assert [s.score.sequence for s in again.scored] == [1]  # a new lead, not a duplicate


@settings(max_examples=25, deadline=None)
@given(events=event_streams())
def test_a_batch_is_the_fold_of_apply_event(model: ScoringModel, events: list[Event]) -> None:
    state: LeadState | None = None
    expected = []
    for event in events:
        outcome = apply_event(state, event, model)
        if outcome.score is not None:
            state = outcome.state
            expected.append(orjson.loads(outcome.score.to_json()))
    half = len(events) // 2
    known: dict[str, LeadState] = {}
    first = score_batch(records(events[:half]), known, model)
    second = score_batch(records(events[half:], half), known, model, applied_offset=half - 1)
    got = [orjson.loads(s.score.to_json()) for s in (*first.scored, *second.scored)]
    assert got == expected
    assert known.get("ada@example.com") == state

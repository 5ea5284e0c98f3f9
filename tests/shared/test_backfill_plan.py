"""The import's plan: rows checked as ingest checks them, ordered by event time, and leads
refused whose history reaches beyond the de-duplication horizon, exactly where scoring
would dead-letter it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.scoring.lead import LeadState, SkipKind
from services.scoring.model import load_model
from services.scoring.scoring import apply_event
from shared.backfill.formats import LineError, Row
from shared.backfill.plan import LeadFacts, check, plan
from shared.events import Event

HORIZON = timedelta(days=30)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(days: float) -> str:
    return (T0 + timedelta(days=days)).isoformat().replace("+00:00", "Z")


def row(line: int, lead: str = "ada@example.com", days: float = 0, **fields: Any) -> Row:
    envelope = {"lead_id": lead, "type": "email.opened", "occurred_at": at(days), **fields}
    return Row(line, envelope)


def test_each_bad_row_is_named_by_line_and_field_and_the_others_stay() -> None:
    rows: list[Row | LineError] = [
        row(1, event_id="a"),
        Row(2, {"lead_id": "ada@example.com", "type": "email.opened", "occurred_at": "Jan 5"}),
        Row(3, {"lead_id": "bob@example.com", "occurred_at": at(0)}),
        LineError(4, "line", "not JSON"),
        row(5, type="lead.erased"),
    ]
    checked = check(rows, "email")
    assert [item.line for item in checked.events] == [1]
    assert checked.read == 5
    assert [(e.line, e.field) for e in checked.errors] == [
        (2, "occurred_at"),
        (3, "type"),
        (4, "line"),
        (5, "type"),
    ]
    assert "RFC 3339" in checked.errors[0].reason
    assert "internal event type" in checked.errors[3].reason


def test_events_are_ordered_by_event_time_then_line_and_lead_ids_normalised() -> None:
    rows = [
        row(1, "Ada@Example.com", days=3, event_id="late"),
        row(2, "bob@example.com", days=1, event_id="b"),
        row(3, "ada@example.com", days=1, event_id="early"),
        row(4, "ada@example.com", days=1, event_id="early-too"),
    ]
    checked = check(rows, "email")
    assert [item.event.event_id for item in checked.events] == ["b", "early", "early-too", "late"]
    assert checked.lead_ids == ["ada@example.com", "bob@example.com"]


def test_an_event_without_an_id_gets_the_same_id_at_every_run() -> None:
    first = check([row(1, "Ada@Example.com", traits={"industry": "saas"})], "email")
    again = check([row(7, "ada@example.com", traits={"industry": "saas"})], "email")
    other = check([row(1, traits={"industry": "retail"})], "email")
    (event,) = [item.event for item in first.events]
    assert event.event_id.startswith("import-")
    assert event.event_id == again.events[0].event.event_id
    assert event.event_id != other.events[0].event.event_id


def test_a_repeated_row_is_sent_once_and_a_reused_id_is_an_error() -> None:
    rows = [
        row(1, event_id="e1"),
        row(2, event_id="e1"),  # the same event again: an export's duplicate
        row(3, event_id="e1", days=2),  # the same id for another event
        row(4, "bob@example.com", event_id="e1"),  # ids are per lead
    ]
    checked = check(rows, "email")
    assert [(i.line, i.event.lead_id) for i in checked.events] == [
        (1, "ada@example.com"),
        (4, "bob@example.com"),
    ]
    assert checked.duplicates == 1
    assert checked.errors == [
        LineError(
            3,
            "event_id",
            "'e1' is already the id of another event of lead 'ada@example.com' (line 1)",
        )
    ]


def test_leads_unknown_to_the_system_get_their_whole_history() -> None:
    checked = check([row(n, days=n * 20, event_id=str(n)) for n in range(5)], "email")
    planned = plan(checked, {}, HORIZON)
    assert [item.line for item in planned.send] == [0, 1, 2, 3, 4]
    assert planned.refused == []


def test_a_lead_with_history_beyond_the_horizon_of_its_newest_event_is_refused_whole() -> None:
    rows = [
        row(1, "ada@example.com", days=0, event_id="old"),
        row(2, "ada@example.com", days=50, event_id="recent"),
        row(3, "bob@example.com", days=0, event_id="b-old"),
        row(4, "cyd@example.com", days=30, event_id="c-edge"),
    ]
    facts = {
        "ada@example.com": LeadFacts(T0 + timedelta(days=45)),  # cutoff: day 15
        "bob@example.com": LeadFacts(T0 + timedelta(days=20)),  # cutoff: day -10
        "cyd@example.com": LeadFacts(T0 + timedelta(days=60)),  # cutoff: day 30, exactly
        "dan@example.com": LeadFacts(None),
    }
    planned = plan(check(rows, "email"), facts, HORIZON)
    assert [item.event.event_id for item in planned.send] == ["b-old", "c-edge"]
    (ada,) = planned.refused
    assert (ada.lead_id, ada.events, ada.too_old) == ("ada@example.com", 2, 1)
    assert planned.refused_events == 2
    reason = ada.reason()
    assert reason.startswith("lead ada@example.com: refused, none of its 2 events sent: 1 are")
    assert "older than 2026-01-16T00:00:00Z, 30 days (the de-duplication horizon)" in reason
    assert "before its newest event (2026-02-15T00:00:00Z)" in reason
    assert "earlier import" not in reason


def test_a_refusal_says_when_the_file_itself_may_have_made_the_lead_so_new() -> None:
    rows = [row(1, days=0, event_id="a"), row(2, days=90, event_id="b")]
    planned = plan(
        check(rows, "email"), {"ada@example.com": LeadFacts(T0 + timedelta(days=90))}, HORIZON
    )
    assert "if an earlier import of this file loaded it" in planned.refused[0].reason()


def test_the_plan_refuses_exactly_what_scoring_would_dead_letter() -> None:
    """Folded through scoring's own apply_event on top of the lead's live state: what the
    plan sends is applied, none of it too old; a refused lead's old events would not be."""
    model = load_model()
    live = Event(
        event_id="live",
        type="email.clicked",
        lead_id="ada@example.com",
        occurred_at=T0 + timedelta(days=100),
    )
    ada = apply_event(None, live, model, HORIZON).state
    rows = [
        # a new lead's history, longer than the horizon, in any order in the file
        *(row(n, "bob@example.com", days=(7 - n) * 15, event_id=f"b{n}") for n in range(8)),
        # for ada, only history within the horizon of her live event, and after it
        row(10, "ada@example.com", days=75, event_id="a1"),
        row(11, "ada@example.com", days=120, event_id="a2"),
        row(12, "ada@example.com", days=71, event_id="a0"),
    ]
    facts = {"ada@example.com": LeadFacts(ada.as_of)}
    planned = plan(check(rows, "email"), facts, HORIZON)
    assert planned.refused == []
    states: dict[str, LeadState | None] = {"ada@example.com": ada, "bob@example.com": None}
    for item in planned.send:
        outcome = apply_event(states[item.event.lead_id], item.event, model, HORIZON)
        assert outcome.skipped is None, item
        states[item.event.lead_id] = outcome.state

    older = check([row(1, "ada@example.com", days=69, event_id="too-old")], "email")
    refused = plan(older, facts, HORIZON)
    assert [lead.lead_id for lead in refused.refused] == ["ada@example.com"]
    skipped = apply_event(ada, older.events[0].event, model, HORIZON).skipped
    assert skipped is not None
    assert skipped.kind is SkipKind.TOO_OLD


def test_batches_keep_the_order() -> None:
    checked = check([row(n, days=n, event_id=str(n)) for n in range(5)], "email")
    planned = plan(checked, {}, HORIZON)
    assert [[i.line for i in batch] for batch in planned.batches(2)] == [[0, 1], [2, 3], [4]]

"""The native envelope refuses what would be scored wrongly, and says which field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.events import LEAD_ERASED, MAX_EVENT_BYTES, Event, EventIn


def event(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "type": "email.clicked",
        "lead_id": "ada@example.com",
        "occurred_at": "2026-11-20T10:00:00Z",
        "source": "mailer",
        "properties": {"campaign": "nov"},
        "traits": {},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def error_fields(exc: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {".".join(str(p) for p in err["loc"]) for err in exc.value.errors()}


def test_a_valid_event_round_trips_through_json() -> None:
    parsed = Event.model_validate(event())
    assert Event.model_validate_json(parsed.to_json()) == parsed
    assert parsed.occurred_at == datetime(2026, 11, 20, 10, tzinfo=UTC)


def test_missing_lead_id_is_named() -> None:
    with pytest.raises(ValidationError) as exc:
        Event.model_validate(event(lead_id=...))
    assert error_fields(exc) == {"lead_id"}


@pytest.mark.parametrize("lead_id", ["", "   ", "a\x00b", "x" * 257])
def test_blank_or_control_or_overlong_lead_ids_are_refused(lead_id: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Event.model_validate(event(lead_id=lead_id))
    assert error_fields(exc) == {"lead_id"}


@pytest.mark.parametrize(
    "when",
    [
        "yesterday",
        "2026-11-20T10:00:00",
        "2026-13-01T00:00:00Z",
        12.5,
        None,
        # epoch seconds in a string are as much a guess as the number
        "1700000000",
        # shapes pydantic parses that RFC 3339 does not have
        "2026-11-20 10:00:00Z",
        "2026-11-20T10:00:00+0200",
        # out of range once converted to UTC (was an OverflowError, a 500 in ingest)
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:00:00-02:00",
    ],
)
def test_bad_or_naive_timestamps_are_refused(when: object) -> None:
    with pytest.raises(ValidationError) as exc:
        Event.model_validate(event(occurred_at=when))
    assert error_fields(exc) == {"occurred_at"}


def test_far_future_timestamps_are_refused() -> None:
    future = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    with pytest.raises(ValidationError, match="future"):
        Event.model_validate(event(occurred_at=future))


def test_offsets_are_normalised_to_utc() -> None:
    parsed = Event.model_validate(event(occurred_at="2026-11-20T12:00:00+02:00"))
    assert parsed.occurred_at == datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert b'"occurred_at":"2026-11-20T10:00:00Z"' in parsed.to_json()


@pytest.mark.parametrize(
    ("field", "value"),
    [("properties", ["not", "an", "object"]), ("traits", "saas"), ("type", 42), ("source", 1)],
)
def test_wrong_types_are_named(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        Event.model_validate(event(**{field: value}))
    assert {f.split(".")[0] for f in error_fields(exc)} == {field}


def test_unknown_fields_are_refused_by_name() -> None:
    with pytest.raises(ValidationError) as exc:
        Event.model_validate(event(leadid="typo@example.com"))
    assert error_fields(exc) == {"leadid"}


def test_huge_payloads_are_refused() -> None:
    with pytest.raises(ValidationError, match="bytes"):
        Event.model_validate(event(properties={"blob": "x" * MAX_EVENT_BYTES}))


def test_a_missing_event_id_is_assigned_and_unique() -> None:
    first = EventIn.model_validate(event(event_id=...))
    second = EventIn.model_validate(event(event_id=...))
    assert first.event_id
    assert second.event_id
    assert first.event_id != second.event_id


@given(st.text(min_size=1, max_size=200).filter(lambda s: s.strip() and s.isprintable()))
def test_unicode_lead_ids_survive_the_wire(lead_id: str) -> None:
    parsed = Event.model_validate(event(lead_id=lead_id))
    assert parsed.lead_id == lead_id.strip()
    assert Event.model_validate_json(parsed.to_json()).lead_id == parsed.lead_id


def test_clients_cannot_post_the_internal_erase_type() -> None:
    with pytest.raises(ValidationError) as refused:
        EventIn.model_validate(event(type=LEAD_ERASED))
    assert error_fields(refused) == {"type"}
    assert "internal" in refused.value.errors()[0]["msg"]
    assert Event.model_validate(event(type=LEAD_ERASED)).type == LEAD_ERASED  # leadflow's own

"""CloudEvents 1.0 map onto the native envelope and back without loss."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.cloudevents import binary_to_structured, from_cloudevent, to_cloudevent
from shared.events import Event


def cloudevent(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": "ce-1",
        "type": "form.submitted",
        "source": "https://forms.example.com",
        "subject": "ada@example.com",
        "time": "2026-11-20T10:00:00Z",
        "data": {"form": "contact", "traits": {"industry": "saas"}},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def test_structured_mode_maps_every_attribute() -> None:
    event = from_cloudevent(cloudevent())
    assert event.event_id == "ce-1"
    assert event.type == "form.submitted"
    assert event.lead_id == "ada@example.com"
    assert event.source == "https://forms.example.com"
    assert event.properties == {"form": "contact"}
    assert event.traits == {"industry": "saas"}


def test_data_with_explicit_properties_uses_them() -> None:
    ce = cloudevent(data={"properties": {"path": "/pricing"}, "traits": {"employees": 80}})
    event = from_cloudevent(ce)
    assert event.properties == {"path": "/pricing"}
    assert event.traits == {"employees": 80}


def test_a_cloudevent_without_subject_has_no_lead() -> None:
    with pytest.raises(ValidationError) as exc:
        from_cloudevent(cloudevent(subject=...))
    assert [err["loc"] for err in exc.value.errors()] == [("subject",)]


def test_non_object_data_is_refused() -> None:
    with pytest.raises(ValueError, match="data must be a JSON object"):
        from_cloudevent(cloudevent(data=[1, 2]))


def test_binary_mode_reads_ce_headers() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-type": "page.viewed",
        "ce-source": "site",
        "ce-subject": "bob@example.com",
        "ce-time": "2026-11-20T10:00:00Z",
        "content-type": "application/json",
    }
    event = from_cloudevent(binary_to_structured(headers, {"path": "/pricing"}))
    assert (event.event_id, event.type, event.lead_id) == ("b-1", "page.viewed", "bob@example.com")
    assert event.properties == {"path": "/pricing"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
attributes = st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=4)


@given(properties=attributes, traits=attributes)
def test_native_to_cloudevent_and_back_is_lossless(
    properties: dict[str, Any], traits: dict[str, Any]
) -> None:
    native = Event(
        event_id="e-9",
        type="email.opened",
        lead_id="zoë@example.com",
        occurred_at="2026-11-20T10:00:00.250000Z",
        source="mailer",
        properties=properties,
        traits=traits,
    )
    assert Event.model_validate(from_cloudevent(to_cloudevent(native)).model_dump()) == native

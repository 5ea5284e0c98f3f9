"""CloudEvents 1.0 map onto the native envelope and back without loss."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.ingest.decoding import InvalidEvents, UnsupportedMediaType, decode_single
from shared.cloudevents import (
    binary_to_structured,
    decode_header_value,
    from_cloudevent,
    kafka_headers,
    to_cloudevent,
)
from shared.events import Event, EventIn, Score, ScoreUpdate, Stage, StageChange


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


# --- as the CNCF SDK sends them: both of its APIs, both HTTP modes -------------------------

SDK_ATTRIBUTES = {
    "id": "é 1%",  # a space, a percent and a non-ASCII letter: all percent-encoded by 2.x
    "type": "form.submitted",
    "source": "/forms/contact us",
    "subject": "José@Example.com",
    "time": "2026-11-20T10:00:00+01:00",
}
SDK_DATA = {"form": "contact", "traits": {"industry": "saas"}}


def sdk_1x_messages() -> list[tuple[dict[str, str], bytes]]:
    """``to_binary`` and ``to_structured`` of the 1.x API (``cloudevents.http`` and
    ``cloudevents.conversion`` in 1.x, kept under ``cloudevents.v1`` in 2.x)."""
    try:
        from cloudevents import conversion, http  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        from cloudevents.v1 import conversion, http
    event = http.CloudEvent(dict(SDK_ATTRIBUTES), SDK_DATA)
    binary = conversion.to_binary(event)
    structured = conversion.to_structured(event)
    return [(dict(headers), bytes(body)) for headers, body in (binary, structured)]


def sdk_2x_messages() -> list[tuple[dict[str, str], bytes]]:
    """``to_binary`` and ``to_structured`` of the 2.x API (``cloudevents.core``)."""
    core = pytest.importorskip("cloudevents.core.bindings.http")
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    attributes: dict[str, Any] = {**SDK_ATTRIBUTES, "specversion": "1.0"}
    attributes["time"] = datetime.fromisoformat(SDK_ATTRIBUTES["time"])
    event = CloudEvent(attributes=attributes, data=SDK_DATA)
    messages = [core.to_binary(event, JSONFormat()), core.to_structured(event, JSONFormat())]
    return [(dict(m.headers), m.body) for m in messages]


def _decoded(headers: dict[str, str], body: bytes) -> EventIn:
    return decode_single(headers.get("content-type"), headers, body)


@pytest.mark.parametrize("messages", [sdk_1x_messages, sdk_2x_messages], ids=["1.x", "2.x"])
def test_the_sdk_s_binary_and_structured_modes_give_the_same_event(
    messages: Callable[[], list[tuple[dict[str, str], bytes]]],
) -> None:
    (binary_headers, binary_body), (structured_headers, structured_body) = messages()
    assert "content-type" not in binary_headers  # datacontenttype unset: no Content-Type
    binary = _decoded(binary_headers, binary_body)
    structured = _decoded(structured_headers, structured_body)
    assert binary == structured
    assert (binary.event_id, binary.lead_id, binary.source) == (
        "é 1%",
        "José@Example.com",
        "/forms/contact us",
    )
    assert binary.properties == {"form": "contact"}
    assert binary.traits == {"industry": "saas"}


def test_both_sdk_apis_name_the_same_lead() -> None:
    events = [_decoded(*message) for message in (*sdk_1x_messages(), *sdk_2x_messages())]
    assert len({(e.event_id, e.lead_id, e.occurred_at) for e in events}) == 1


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("Euro%20%E2%82%AC%20%F0%9F%98%80", "Euro € 😀"),
        ("%c3%a9", "é"),  # lower-case hex accepted
        ("%41bc", "Abc"),  # needlessly encoded, accepted
        ('"quoted \\"value\\""', 'quoted "value"'),  # older senders' quoted strings
        ("100%", "100%"),  # a lone percent is itself
    ],
)
def test_binary_header_values_are_unquoted_then_percent_decoded(raw: str, decoded: str) -> None:
    assert decode_header_value("id", raw) == decoded


def test_header_bytes_that_are_not_utf8_are_refused() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "%C0%A0", "ce-type": "x", "ce-source": "s"}
    with pytest.raises(InvalidEvents) as refused:
        decode_single(None, headers, b"{}")
    assert refused.value.errors[0]["loc"] == ["body", "ce-id"]


def test_binary_mode_with_a_non_json_content_type_is_still_415() -> None:
    headers = {"ce-specversion": "1.0", "content-type": "text/xml"}
    with pytest.raises(UnsupportedMediaType):
        decode_single("text/xml", headers, b"<a/>")


def test_stage_changes_and_scores_carry_kafka_binding_headers() -> None:
    score = Score(fit=75, engagement=40, total=115)
    change = StageChange(
        change_id="c-1",
        lead_id="ada@example.com",
        sequence=2,
        from_stage=Stage.PROSPECT,
        to_stage=Stage.OPPORTUNITY,
        reason="engagement",
        trigger_event_id="e-5",
        occurred_at=datetime(2026, 11, 20, 10, tzinfo=UTC),
        score=score,
        model_version="default-1",
    )
    headers = dict(kafka_headers(change))
    assert headers == {
        "ce_specversion": b"1.0",
        "ce_id": b"c-1",
        "ce_source": b"leadflow/scoring",
        "ce_type": b"leadflow.stage.changed",
        "ce_subject": b"ada@example.com",
        "ce_time": b"2026-11-20T10:00:00Z",
        "content-type": b"application/json",
    }
    update = ScoreUpdate(
        lead_id="ada@example.com",
        sequence=7,
        fit=75,
        engagement=40,
        total=115,
        as_of=datetime(2026, 11, 20, 10, tzinfo=UTC),
        stage=Stage.OPPORTUNITY,
        model_version="default-1",
        trigger_event_id="e-7",
        breakdown=[],
    )
    headers = dict(kafka_headers(update))
    assert (headers["ce_type"], headers["ce_id"]) == (
        b"leadflow.score.updated",
        b"ada@example.com/7",
    )

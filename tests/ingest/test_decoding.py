"""Request bodies become events, or errors naming each bad item by index and field."""

from __future__ import annotations

import orjson
import pytest

from services.ingest.decoding import (
    InvalidEvents,
    UnsupportedMediaType,
    decode_batch,
    decode_single,
)
from shared.errors import MAX_REPORTED_ERRORS


def native(i: int, **changes: object) -> dict[str, object]:
    item: dict[str, object] = {
        "event_id": f"e-{i}",
        "type": "page.viewed",
        "lead_id": f"lead-{i}@example.com",
        "occurred_at": "2026-11-20T10:00:00Z",
        "properties": {"path": "/pricing"},
    }
    item.update(changes)
    return item


def body(value: object) -> bytes:
    return orjson.dumps(value)


def test_single_native_event() -> None:
    event = decode_single("application/json; charset=utf-8", {}, body(native(1)))
    assert event.event_id == "e-1"


def test_single_structured_cloudevent_reports_cloudevent_field_names() -> None:
    ce = {"specversion": "1.0", "type": "x", "source": "s", "subject": "a", "time": "nope"}
    with pytest.raises(InvalidEvents) as exc:
        decode_single("application/cloudevents+json", {}, body(ce))
    assert [e["loc"] for e in exc.value.errors] == [["body", "time"]]


def test_non_json_is_refused_with_the_reason() -> None:
    with pytest.raises(InvalidEvents) as exc:
        decode_single("application/json", {}, b"{not json")
    assert exc.value.errors[0]["type"] == "json_invalid"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/xml"])
def test_wrong_content_types_are_unsupported(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        decode_single(content_type, {}, body(native(1)))


def test_batch_accepts_an_array_or_an_events_object() -> None:
    items = [native(i) for i in range(3)]
    assert len(decode_batch("application/json", body(items), 1000)) == 3
    assert len(decode_batch("application/json", body({"events": items}), 1000)) == 3


def test_batch_names_every_bad_item_by_index_and_field() -> None:
    items = [native(0), native(1, lead_id=""), native(2), native(3, occurred_at="soon", typo=1)]
    with pytest.raises(InvalidEvents) as exc:
        decode_batch("application/json", body(items), 1000)
    locs = sorted(tuple(e["loc"]) for e in exc.value.errors)
    assert locs == [("body", 1, "lead_id"), ("body", 3, "occurred_at"), ("body", 3, "typo")]


def test_batch_limits_and_empty_batches() -> None:
    with pytest.raises(InvalidEvents, match="invalid"):
        decode_batch("application/json", body([native(i) for i in range(11)]), 10)
    with pytest.raises(InvalidEvents):
        decode_batch("application/json", body([]), 10)
    with pytest.raises(InvalidEvents):
        decode_batch("application/json", body({"event": []}), 10)


def test_cloudevents_batch_requires_cloudevents() -> None:
    with pytest.raises(InvalidEvents) as exc:
        decode_batch("application/cloudevents-batch+json", body([native(0)]), 10)
    assert exc.value.errors[0]["loc"] == ["body", 0, "specversion"]


# --- bounded error answers -------------------------------------------------------------


def test_an_event_with_100_000_unknown_fields_gets_a_short_answer() -> None:
    item = native(1, **{f"k{i}": i for i in range(100_000)})
    with pytest.raises(InvalidEvents) as exc:
        decode_single("application/json", {}, body(item))
    errors = exc.value.errors
    assert len(errors) == MAX_REPORTED_ERRORS + 1
    assert errors[0] == {"loc": ["body", "k0"], "msg": "Extra inputs are not permitted",
                         "type": "extra_forbidden"}  # fmt: skip
    assert errors[-1] == {
        "loc": ["body"],
        "msg": f"{100_000 - MAX_REPORTED_ERRORS} more errors not shown",
        "type": "too_many_errors",
    }
    assert len(orjson.dumps(errors)) < 20_000


def test_a_few_unknown_fields_are_each_named_by_pydantic() -> None:
    with pytest.raises(InvalidEvents) as exc:
        decode_single("application/json", {}, body(native(1, leadid="x", typ="y")))
    assert [e["loc"] for e in exc.value.errors] == [["body", "leadid"], ["body", "typ"]]


def test_many_bad_fields_inside_properties_are_capped_with_the_count() -> None:
    properties = {"k" * 257 + str(i): 1 for i in range(300)}  # each key is too long
    with pytest.raises(InvalidEvents) as exc:
        decode_single("application/json", {}, body(native(1, properties=properties)))
    errors = exc.value.errors
    assert len(errors) == MAX_REPORTED_ERRORS + 1
    assert errors[-1]["msg"] == "200 more errors not shown"


def test_a_batch_stops_checking_once_the_cap_is_reached() -> None:
    items = [native(i, occurred_at="yesterday") for i in range(1000)]
    with pytest.raises(InvalidEvents) as exc:
        decode_batch("application/json", body(items), 1000)
    errors = exc.value.errors
    assert len(errors) == MAX_REPORTED_ERRORS + 1
    assert errors[MAX_REPORTED_ERRORS - 1]["loc"] == [
        "body",
        MAX_REPORTED_ERRORS - 1,
        "occurred_at",
    ]
    assert errors[-1] == {
        "loc": ["body"],
        "msg": f"items {MAX_REPORTED_ERRORS} to 999 not checked",
        "type": "too_many_errors",
    }


def test_a_batch_item_with_many_unknown_fields_is_cut_once() -> None:
    items = [native(0, **{f"k{i}": i for i in range(500)}), native(1, type="")]
    with pytest.raises(InvalidEvents) as exc:
        decode_batch("application/json", body(items), 1000)
    errors = exc.value.errors
    assert len(errors) == MAX_REPORTED_ERRORS + 1
    assert errors[-1]["msg"] == "400 more errors not shown; items 1 to 1 not checked"

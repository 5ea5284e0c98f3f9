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

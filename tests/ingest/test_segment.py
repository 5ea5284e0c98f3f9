"""The Segment mapping, call by call, refusal by refusal (no I/O)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.inflate import InflatedTooLarge, Inflater, NotGzip
from services.ingest.segment import (
    CALL_TYPES,
    MAX_BATCH_BYTES,
    MAX_CALL_BYTES,
    CallRefused,
    TooLarge,
    decode_batch,
    decode_call,
    to_event,
    with_merge_requests,
)
from services.ingest.segment_events import (
    EventMapError,
    event_type_of_name,
    load_event_map,
    parse_event_map,
)
from services.scoring.model import load_model
from shared import lead_ids
from shared.events import IDENTITY_MERGE, EventIn
from shared.lead_ids import LeadIdRule

RECEIVED = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
EVENTS = load_event_map(None)


def call(kind: str, **fields: object) -> dict[str, object]:
    return {"type": kind, "messageId": f"m-{kind}", "userId": "ada@example.com", **fields}


def one(body: dict[str, object], kind: str) -> EventIn:
    return decode_call(orjson.dumps(body), kind, RECEIVED, EVENTS)


def test_identify_is_a_lead_update_with_its_traits() -> None:
    event = one(call("identify", traits={"industry": "saas"}, anonymousId="v-1"), "identify")
    assert event.type == "lead.updated"
    assert event.traits == {"industry": "saas"}
    assert event.properties == {"anonymous_id": "v-1"}  # kept for the merge to come
    assert (event.event_id, event.lead_id) == ("m-identify", "ada@example.com")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Email Opened", "email.opened"),
        ("Email Link Clicked", "email.clicked"),
        ("Unsubscribed", "email.unsubscribed"),
        ("Demo Requested", "demo.requested"),
        ("Form Submitted", "form.submitted"),
        ("Webinar Attended", "webinar.attended"),
        ("  email   opened ", "email.opened"),  # case and spaces do not matter
        ("Product Viewed", "product_viewed"),  # unmapped: its own name, made a type
        ("Plan: Upgraded!", "plan:_upgraded"),
    ],
)
def test_track_names_map_to_event_types(name: str, expected: str) -> None:
    event = one(call("track", event=name, properties={"campaign": "nov"}), "track")
    assert event.type == expected
    assert event.properties == {"campaign": "nov"}


def test_every_default_mapping_targets_a_type_or_scores_zero_by_name() -> None:
    scored = {rule.event for rule in load_model(None).engagement.rules}
    targets = set(EVENTS.track.values())
    assert {"email.opened", "email.clicked", "email.unsubscribed"} <= targets & scored
    assert {"demo.requested", "form.submitted", "webinar.attended"} <= targets & scored


def test_unmapped_names_become_valid_event_types() -> None:
    assert event_type_of_name("!!!") == "track"
    assert event_type_of_name("a" * 300) == "a" * 128
    assert event_type_of_name("Signed Up") == "signed_up"


def test_page_takes_its_path_from_properties_then_context_then_url() -> None:
    own = one(call("page", name="Pricing", properties={"path": "/pricing"}), "page")
    assert own.type == "page.viewed"
    assert own.properties == {"path": "/pricing", "name": "Pricing"}
    from_context = one(call("page", context={"page": {"path": "/pricing/team"}}), "page")
    assert from_context.properties["path"] == "/pricing/team"
    from_url = one(call("page", properties={"url": "https://x.io/pricing?a=1"}), "page")
    assert from_url.properties["path"] == "/pricing"
    assert "path" not in one(call("page"), "page").properties
    assert "path" not in one(call("page", properties={"url": "http://[::1"}), "page").properties


def test_identify_traits_may_come_in_the_context_as_rudderstack_sends_them() -> None:
    both = {
        "traits": {"industry": "saas"},
        "context": {"traits": {"industry": "x", "employees": 9}},
    }
    event = one(call("identify", **both), "identify")
    assert event.traits == {"industry": "saas", "employees": 9}


def test_screen_is_a_screen_view_with_its_name() -> None:
    event = one(call("screen", name="Checkout"), "screen")
    assert (event.type, event.properties) == ("screen.viewed", {"name": "Checkout"})


def test_group_and_alias_are_stored_scoring_nothing_for_now() -> None:
    group = one(call("group", groupId="acme", traits={"employees": 500}), "group")
    assert group.type == "segment.group"
    assert group.properties == {"group_id": "acme", "traits": {"employees": 500}}
    assert group.traits == {}  # the account's traits are not the lead's
    alias = one(call("alias", previousId="v-1"), "alias")
    assert (alias.type, alias.properties) == ("segment.alias", {"previous_id": "v-1"})
    scored = {rule.event for rule in load_model(None).engagement.rules}
    assert not {"segment.group", "segment.alias"} & scored


def test_an_anonymous_visitor_is_an_anon_lead_and_numbers_are_ids() -> None:
    visitor = one({"anonymousId": "v-1", "event": "Email Opened"}, "track")
    assert visitor.lead_id == "anon:v-1"
    numbered = one({"userId": 42, "anonymousId": "v-1", "event": "x"}, "track")
    assert numbered.lead_id == "42"


def test_the_library_names_the_source() -> None:
    event = one(
        call("track", event="x", context={"library": {"name": "analytics-python"}}), "track"
    )
    assert event.source == "segment/analytics-python"
    assert one(call("track", event="x"), "track").source == "segment"


def test_message_id_is_the_event_id_and_one_is_assigned_without() -> None:
    body = call("track", event="x")
    del body["messageId"]
    first, second = one(body, "track"), one(body, "track")
    assert first.event_id != second.event_id


def test_clock_skew_is_corrected_with_sent_at() -> None:
    # the device's clock is an hour behind: it says it sent at 11:00, we got it at 12:00
    body = call("track", event="x", timestamp="2026-11-20T10:30:00+00:00")
    body["sentAt"] = "2026-11-20T11:00:00Z"
    assert one(body, "track").occurred_at == datetime(2026, 11, 20, 11, 30, tzinfo=UTC)
    # originalTimestamp wins over timestamp; a time without offset is UTC
    body["originalTimestamp"] = "2026-11-20T10:00:00"
    assert one(body, "track").occurred_at == datetime(2026, 11, 20, 11, 0, tzinfo=UTC)
    # no sentAt: the time as sent; no time: when it was received
    assert one(
        call("track", event="x", timestamp="2026-11-19T08:00:00+01:00"), "track"
    ).occurred_at == datetime(2026, 11, 19, 7, tzinfo=UTC)
    assert one(call("track", event="x"), "track").occurred_at == RECEIVED


def test_a_batch_applies_its_sent_at_and_context_to_each_call() -> None:
    body = {
        "batch": [
            call("track", event="Email Opened", timestamp="2026-11-20T10:00:00Z"),
            call(
                "page",
                messageId="m-2",
                sentAt="2026-11-20T11:30:00Z",
                timestamp="2026-11-20T11:00:00Z",
            ),
        ],
        "sentAt": "2026-11-20T11:00:00Z",
        "context": {"library": {"name": "analytics-python"}, "page": {"path": "/pricing"}},
        "writeKey": "secret",
    }
    events = decode_batch(orjson.dumps(body), RECEIVED, EVENTS, 100)
    assert [e.type for e in events] == ["email.opened", "page.viewed"]
    assert events[0].occurred_at == RECEIVED - timedelta(hours=1)
    assert events[1].occurred_at == RECEIVED - timedelta(minutes=30)  # its own sentAt
    assert events[1].properties["path"] == "/pricing"
    assert all(e.source == "segment/analytics-python" for e in events)
    assert b"secret" not in b"".join(e.to_json() for e in events)  # the write key is not kept


def refused(body: object, kind: str = "track") -> CallRefused:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(CallRefused) as caught:
        decode(raw, kind)
    return caught.value


def decode(raw: bytes, kind: str) -> object:
    if kind == "batch":
        return decode_batch(raw, RECEIVED, EVENTS, 3)
    return decode_call(raw, kind, RECEIVED, EVENTS)


@pytest.mark.parametrize(
    ("body", "kind", "code", "loc"),
    [
        (b"{nope", "track", "invalid_json", ["body"]),
        ([1], "track", "invalid_request", ["body"]),
        ({"event": "x"}, "track", "invalid_request", ["body", "userId"]),
        ({"userId": "a"}, "track", "invalid_request", ["body", "event"]),
        ({"userId": "a", "event": " "}, "track", "invalid_request", ["body", "event"]),
        ({"userId": "a"}, "group", "invalid_request", ["body", "groupId"]),
        ({"userId": "a"}, "alias", "invalid_request", ["body", "previousId"]),
        ({"userId": "a", "traits": [1]}, "identify", "invalid_request", ["body", "traits"]),
        (
            {"userId": "a", "event": "x", "properties": "p"},
            "track",
            "invalid_request",
            ["body", "properties"],
        ),
        (
            {"userId": "a", "event": "x", "context": 1},
            "track",
            "invalid_request",
            ["body", "context"],
        ),
        (
            {"userId": "a", "event": "x", "timestamp": 1700000000},
            "track",
            "invalid_request",
            ["body", "timestamp"],
        ),
        (
            {"userId": "a", "event": "x", "timestamp": "yesterday"},
            "track",
            "invalid_request",
            ["body", "timestamp"],
        ),
        (
            {"userId": "a", "event": "x", "timestamp": "2026-11-20T10:00:00Z", "sentAt": "soon"},
            "track",
            "invalid_request",
            ["body", "sentAt"],
        ),
        (
            {"userId": "a", "event": "x", "timestamp": "2999-01-01T00:00:00Z"},
            "track",
            "invalid_request",
            ["body", "timestamp"],
        ),
        ({"userId": "a" * 300, "event": "x"}, "track", "invalid_request", ["body", "userId"]),
        (
            {"userId": "a", "messageId": "m\x01", "event": "x"},
            "track",
            "invalid_request",
            ["body", "messageId"],
        ),
        ({"userId": "a", "event": "lead.erased"}, "track", "invalid_request", ["body", "event"]),
        ({"userId": "a", "event": "stage.set"}, "track", "invalid_request", ["body"]),
        ({"batch": "x"}, "batch", "invalid_request", ["body", "batch"]),
        ({"batch": []}, "batch", "invalid_request", ["body", "batch"]),
        ({"batch": [{}] * 4}, "batch", "invalid_request", ["body", "batch"]),
        (
            {"batch": [{"type": "bogus", "userId": "a"}]},
            "batch",
            "invalid_request",
            ["body", "batch", 0, "type"],
        ),
        (
            {"batch": [call("track", event="x"), {"type": "track", "event": "x"}]},
            "batch",
            "invalid_request",
            ["body", "batch", 1, "userId"],
        ),
    ],
)
def test_each_refusal_names_its_field(
    body: object, kind: str, code: str, loc: list[object]
) -> None:
    error = refused(body, kind)
    assert error.code == code
    assert error.errors[0]["loc"][: len(loc)] == loc
    assert error.message


def test_sizes_over_segment_s_limits_are_too_large() -> None:
    big = call("track", event="x", properties={"blob": "x" * MAX_CALL_BYTES})
    assert isinstance(refused(big), TooLarge)
    in_batch = refused({"batch": [big]}, "batch")
    assert isinstance(in_batch, TooLarge)
    assert in_batch.errors[0]["loc"] == ["body", "batch", 0]
    huge = orjson.dumps({"batch": [], "pad": "x" * MAX_BATCH_BYTES})
    assert isinstance(refused(huge, "batch"), TooLarge)


def test_a_call_nested_deeper_than_json_can_be_written_is_refused_not_a_500() -> None:
    deep = b"[" * 400 + b"]" * 400
    body = b'{"batch":[{"type":"track","userId":"a","event":"x","properties":{"p":' + deep + b"}}]}"
    error = refused(body, "batch")
    assert error.errors[0]["loc"] == ["body", "batch", 0]
    single = b'{"userId":"a","event":"x","properties":{"p":' + deep + b"}}"
    assert refused(single).errors[0]["loc"][:2] == ["body", "properties"]


def test_a_bad_batch_reports_every_bad_call_and_accepts_none() -> None:
    bad = {"type": "track", "event": "x"}
    error = refused({"batch": [bad, call("track", event="x"), bad]}, "batch")
    assert [e["loc"][:3] for e in error.errors] == [["body", "batch", 0], ["body", "batch", 2]]


def feed_all(inflater: Inflater, body: bytes) -> None:
    for start in range(0, len(body), 4096):  # as it streams, 4 KB at a time
        inflater.feed(body[start : start + 4096])


def test_the_gzip_inflater_stops_at_its_limit() -> None:
    inflater = Inflater(1000)
    inflater.feed(gzip.compress(b"a" * 1000))
    assert inflater.finish() == b"a" * 1000
    bomb = gzip.compress(b"\0" * 50_000_000)  # 50 MB in about 50 KB
    bomber = Inflater(MAX_BATCH_BYTES)
    with pytest.raises(InflatedTooLarge):
        feed_all(bomber, bomb)
    assert sum(len(part) for part in bomber._parts) <= MAX_BATCH_BYTES
    two = Inflater(100)
    two.feed(gzip.compress(b"ab") + gzip.compress(b"cd"))  # concatenated members
    assert two.finish() == b"abcd"
    with pytest.raises(NotGzip):
        Inflater(100).feed(b"not gzip at all")
    truncated = Inflater(100)
    truncated.feed(gzip.compress(b"abc")[:-6])
    with pytest.raises(NotGzip):
        truncated.finish()


def test_a_mapping_file_changes_the_mapping_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.yaml"
    path.write_text("track:\n  Order Completed: deal.won\n", encoding="utf-8")
    assert load_event_map(path).track_type("order completed") == "deal.won"
    assert load_event_map(path).track_type("Email Opened") == "email_opened"  # replaced whole
    for text in ("track: [1]", "track:\n  X: 'not a type!'", "track:\n  '': a", ": :"):
        with pytest.raises(EventMapError):
            parse_event_map(text, "events.yaml")
    with pytest.raises(EventMapError):
        load_event_map(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("raw", "rule", "expected"),
    [
        (" Ada@Example.COM ", "email", "ada@example.com"),
        ("Ada@Example.COM", "none", "Ada@Example.COM"),
        ("CRM-42", "email", "CRM-42"),  # not an address: case kept
        ("anon:V-1", "email", "anon:V-1"),
        ("Straße@example.de", "email", "strasse@example.de"),
        ("ada@example.com", "email", "ada@example.com"),
    ],
)
def test_lead_ids_are_normalised_by_the_configured_rule(
    raw: str, rule: LeadIdRule, expected: str
) -> None:
    assert lead_ids.normalize(raw, rule) == expected
    assert lead_ids.normalize(expected, rule) == expected  # idempotent


def test_to_event_keeps_the_batch_context_below_the_call_s_own() -> None:
    event = to_event(
        call("page", context={"page": {"path": "/own"}}),
        None,
        received_at=RECEIVED,
        batch_context={"page": {"path": "/batch"}},
        events=EVENTS,
    )
    assert event.properties["path"] == "/own"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    [
        "type", "userId", "anonymousId", "event", "messageId", "timestamp", "sentAt",
        "originalTimestamp", "properties", "traits", "context", "groupId", "previousId",
        "name", "category",
    ]
)  # fmt: skip
CALLS = st.dictionaries(FIELDS, JSON | st.sampled_from(["track", "page", "2026-11-20T10:00:00Z"]))


@settings(max_examples=300, deadline=None)
@given(call=CALLS, kind=st.sampled_from([*CALL_TYPES, None]))
def test_any_call_is_an_event_or_a_refusal_never_an_error(
    call: dict[str, object], kind: str | None
) -> None:
    errors: list[dict[str, object]] = [{"accepted": True}]
    try:
        to_event(call, kind, received_at=RECEIVED, events=EVENTS)
    except CallRefused as exc:
        errors = exc.errors  # every refusal names what is wrong
    assert errors


def test_an_identify_naming_an_anonymous_id_and_an_alias_ask_for_a_merge() -> None:
    identify = one(call("identify", anonymousId="v-1"), "identify")
    alias = one(call("alias", previousId="v-2", userId="Ada@Example.com"), "alias")
    events = lead_ids.normalized(with_merge_requests([identify, alias]), "email")
    merges = [e for e in events if e.type == IDENTITY_MERGE]
    assert [(e.lead_id, e.properties["into"]) for e in merges] == [
        ("anon:v-1", "ada@example.com"),
        ("anon:v-2", "ada@example.com"),
    ]
    again = with_merge_requests([one(call("identify", anonymousId="v-1"), "identify")])
    assert again[1].event_id == merges[0].event_id  # a retried call asks for the same merge
    anonymous_only = one({"type": "identify", "messageId": "m", "anonymousId": "v-3"}, "identify")
    assert with_merge_requests([anonymous_only]) == [anonymous_only]

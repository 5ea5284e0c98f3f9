"""What ingest accepts, scoring scores: one validation (shared/events.py) on both sides.

Events are generated as a client could post them (any nesting up to past the limit,
any unicode, sizes near the limits); whatever ingest's decoding accepts must go
through what scoring does to it: read back from its record value, scored, encoded in
the changelog and restored from it, its score and stage change encoded.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.decoding import InvalidEvents, decode_single
from services.scoring.changelog import PartitionState, apply_record
from services.scoring.model import load_model
from services.scoring.scoring import apply_event
from services.scoring.state_records import lead_record
from shared.events import (
    CRM_EVENT_TYPES,
    MAX_EVENT_BYTES,
    MAX_NESTING_DEPTH,
    Event,
    ScoreUpdate,
    Stage,
    StageChange,
)
from shared.kafka import encode_key

MODEL = load_model()

TYPES = [
    "page.viewed",
    "email.clicked",
    "form.submitted",
    "lead.updated",
    "x.y:z/1",
    *sorted(CRM_EVENT_TYPES),  # their properties follow the stage machine's rules
]

text = st.text(max_size=20)
keys = st.text(min_size=1, max_size=12)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=12,
)


@st.composite
def chains(draw: st.DrawFn) -> Any:
    """Objects and arrays nested close to the limit, on either side of it, or as deep as
    where the parsers on the way give up (orjson will not encode deeper than 254)."""
    near = st.integers(MAX_NESTING_DEPTH - 4, MAX_NESTING_DEPTH + 2)
    value: Any = draw(leaves)
    for _ in range(draw(near | st.integers(190, 250))):
        value = {draw(keys): value} if draw(st.booleans()) else [value]
    return value


big_text = st.integers(MAX_EVENT_BYTES - 64, MAX_EVENT_BYTES + 16).map(lambda n: "é" * (n // 2))
attributes = st.dictionaries(keys, json_values | chains() | big_text, max_size=4)


@st.composite
def posted_events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": draw(st.sampled_from(TYPES)),
        "lead_id": draw(st.text(min_size=1, max_size=40)),
        "occurred_at": draw(st.sampled_from(["2026-11-20T10:00:00Z", "2026-01-01T23:59:59+02:00"])),
        "properties": draw(attributes),
        "traits": draw(attributes),
    }
    if event["type"] in CRM_EVENT_TYPES:  # mostly valid moves, sometimes not
        stages = st.sampled_from([*Stage, "bogus"])
        event["properties"]["stage"] = draw(stages | json_values)
        event["properties"]["reason"] = draw(text | json_values)
    if draw(st.booleans()):
        event["event_id"] = draw(st.text(min_size=1, max_size=40))
    return event


def scored_as_scoring_does(record_value: bytes) -> None:
    """The worker's path for one record, without Kafka: any exception is a dead letter."""
    event = Event.model_validate_json(record_value)
    outcome = apply_event(None, event, MODEL)
    assert outcome.score is not None, outcome.skipped
    ScoreUpdate.model_validate_json(outcome.score.to_json())
    if outcome.stage_change is not None:
        StageChange.model_validate_json(outcome.stage_change.model_dump_json())
    restored = PartitionState()
    apply_record(restored, encode_key(event.lead_id), lead_record(outcome.state))
    assert lead_record(restored.leads[event.lead_id]) == lead_record(outcome.state)


@given(posted_events())
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_every_event_ingest_accepts_is_scored(posted: dict[str, Any]) -> None:
    try:
        accepted = decode_single("application/json", {}, orjson.dumps(posted))
    except InvalidEvents:
        hypothesis.event("refused")
        return
    hypothesis.event("accepted")
    scored_as_scoring_does(accepted.to_json())


def body(depth: int) -> bytes:
    """An event whose properties nest ``depth`` objects (properties itself the first), as
    text: orjson will not even encode it past its own limit."""
    properties = b'{"a":' * (depth - 1) + b'{"a":1}' + b"}" * (depth - 1)
    head = b'{"type":"page.viewed","lead_id":"ada","occurred_at":"2026-11-20T10:00:00Z"'
    return head + b',"properties":' + properties + b"}"


def test_the_deepest_nesting_allowed_is_accepted_and_scored() -> None:
    event = decode_single("application/json", {}, body(MAX_NESTING_DEPTH))
    scored_as_scoring_does(event.to_json())


@pytest.mark.parametrize("depth", [MAX_NESTING_DEPTH + 1, 200, 254, 255, 1000])
def test_deeper_nesting_is_refused_at_the_door_by_name(depth: int) -> None:
    with pytest.raises(InvalidEvents) as refused:
        decode_single("application/json", {}, body(depth))
    (error,) = refused.value.errors
    assert error["loc"] == ["body", "properties"]
    assert f"more than {MAX_NESTING_DEPTH} levels deep" in error["msg"]


def test_scoring_refuses_a_deeper_event_with_the_same_rule() -> None:
    """An event written before the rule existed is dead-lettered, naming the rule."""
    record = body(MAX_NESTING_DEPTH + 1).replace(b"{", b'{"event_id":"e1",', 1)
    with pytest.raises(ValueError, match=f"more than {MAX_NESTING_DEPTH} levels deep"):
        Event.model_validate_json(record)

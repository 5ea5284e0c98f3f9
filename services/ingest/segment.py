"""Segment HTTP Tracking API calls as leadflow events: pure mapping, no I/O.

One call becomes one event (docs/architecture.md, "Segment ingest"):

- ``identify``: ``lead.updated`` with the call's ``traits`` (over ``context.traits``);
- ``track``: the type :mod:`services.ingest.segment_events` maps its ``event`` name to;
- ``page``: ``page.viewed``, ``properties.path`` from the properties or ``context.page``;
- ``screen``: ``screen.viewed``, the screen's ``name`` in the properties;
- ``group`` and ``alias``: ``segment.group`` and ``segment.alias``, stored with what
  they say (``properties.group_id`` and the group's traits, ``properties.previous_id``)
  and scored 0 (the account membership reads the group call).

An ``identify`` with both ``userId`` and ``anonymousId``, and an ``alias``, also ask for an
identity merge (:func:`with_merge_requests`): an ``identity.merge`` keyed by the anonymous
lead, into the known one (docs/architecture.md §5.12).

The lead is ``userId``, else ``anon:<anonymousId>``; ``messageId`` is the event_id (a
retried call is the same event). The time is Segment's: the call's ``originalTimestamp``
or else ``timestamp``, moved by ``receivedAt - sentAt`` when ``sentAt`` is known, so a
device whose clock is off by an hour still places its events right; with no time at
all, when it was received. Refusals are :class:`CallRefused`, naming the call's index in
a batch and the Segment field.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from pydantic import ValidationError

from services.ingest.segment_events import EventMap
from shared.errors import MAX_REPORTED_ERRORS
from shared.events import ANONYMOUS_PREFIX, IDENTITY_MERGE, EventIn, parse_json

MAX_CALL_BYTES = 32 * 1024
"""Segment's limit on one call, and on the body of a single-call endpoint."""

MAX_BATCH_BYTES = 500 * 1024
"""Segment's limit on the (decompressed) body of ``/v1/batch``."""

CALL_TYPES = ("identify", "track", "page", "screen", "group", "alias")

SEGMENT_GROUP = "segment.group"
SEGMENT_ALIAS = "segment.alias"

FIXED_TYPES = {
    "identify": "lead.updated",
    "page": "page.viewed",
    "screen": "screen.viewed",
    "group": SEGMENT_GROUP,
    "alias": SEGMENT_ALIAS,
}

_FIELD_NAMES = {
    "event_id": "messageId",
    "lead_id": "userId",
    "occurred_at": "timestamp",
    "type": "event",
}

ErrorItem = dict[str, Any]

_MERGE_NAMESPACE = uuid.UUID("0d6f1f4e-8a4b-4c55-9f0e-3f6a2b7c9d41")
"""Fixed forever: a retried call must ask for the same merge (same event id)."""


class CallRefused(Exception):
    """The request is refused whole; ``code`` is what Segment's SDKs log, ``errors`` the
    fields in FastAPI's shape (``loc`` from ``body``), at most
    :data:`~shared.errors.MAX_REPORTED_ERRORS` of them."""

    def __init__(self, code: str, message: str, errors: Sequence[ErrorItem] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = list(errors)[:MAX_REPORTED_ERRORS]


class TooLarge(CallRefused):
    """Over Segment's size limits: answered 413, which no SDK retries."""


def _error(loc: Sequence[str | int], msg: str, kind: str) -> ErrorItem:
    return {"loc": ["body", *loc], "msg": msg, "type": kind}


def _invalid(loc: Sequence[str | int], msg: str, kind: str = "value_error") -> CallRefused:
    where = ".".join(str(part) for part in loc)
    return CallRefused(
        "invalid_request", f"{where}: {msg}" if where else msg, [_error(loc, msg, kind)]
    )


def parse_time(value: object, loc: Sequence[str | int]) -> datetime | None:
    """An ISO 8601 time as the SDKs send it (``isoformat()``); one without an offset is
    UTC, as Segment reads it. Numbers are refused: seconds or milliseconds is a guess."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(loc, "must be an ISO 8601 date-time string", "datetime_type")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise _invalid(loc, "must be an ISO 8601 date-time string", "datetime_parsing") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def occurred_at(
    call: Mapping[str, Any], sent_at: object, received_at: datetime, loc: Sequence[str | int]
) -> datetime:
    """Segment's ``timestamp``: ``originalTimestamp`` (else ``timestamp``) plus
    ``receivedAt - sentAt``; the call's own ``sentAt`` before the batch's."""
    field = "originalTimestamp" if call.get("originalTimestamp") is not None else "timestamp"
    original = parse_time(call.get(field), [*loc, field])
    if original is None:
        return received_at
    own = call.get("sentAt")
    sent = parse_time(own, [*loc, "sentAt"]) if own is not None else parse_time(sent_at, ["sentAt"])
    if sent is None:
        return original
    try:
        return original + (received_at - sent)
    except OverflowError:
        raise _invalid([*loc, field], "is out of range once corrected for clock skew") from None


def _text_id(value: object) -> str | None:
    """Segment ids may be numbers (``userId: 42``); empty strings count as absent."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def lead_id(call: Mapping[str, Any], loc: Sequence[str | int]) -> str:
    user = _text_id(call.get("userId"))
    if user is not None:
        return user
    anonymous = _text_id(call.get("anonymousId"))
    if anonymous is not None:
        return ANONYMOUS_PREFIX + anonymous
    raise _invalid([*loc, "userId"], "userId or anonymousId is required", "missing")


def _object(call: Mapping[str, Any], field: str, loc: Sequence[str | int]) -> dict[str, Any]:
    value = call.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid([*loc, field], "must be a JSON object", "dict_type")
    return value


def _page_path(properties: Mapping[str, Any], context: Mapping[str, Any]) -> str | None:
    found = context.get("page")
    page: Mapping[str, Any] = found if isinstance(found, dict) else {}
    for where in (properties, page):
        path = where.get("path")
        if isinstance(path, str) and path:
            return path
    for where in (properties, page):
        url = where.get("url")
        if isinstance(url, str) and url:
            try:
                return urlsplit(url).path or "/"
            except ValueError:  # "http://[::1": no path to be had
                continue
    return None


def _content(
    kind: str, call: Mapping[str, Any], context: Mapping[str, Any], events: EventMap, loc: list[Any]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(type, properties, traits)`` of the event a call of ``kind`` becomes."""
    if kind == "identify":
        properties: dict[str, Any] = {}
        if call.get("userId") is not None and _text_id(call.get("anonymousId")) is not None:
            properties["anonymous_id"] = _text_id(call.get("anonymousId"))
        # RudderStack's SDK sends an identify's traits in context.traits only
        found = context.get("traits")
        traits = {**(found if isinstance(found, dict) else {}), **_object(call, "traits", loc)}
        return FIXED_TYPES[kind], properties, traits
    if kind == "track":
        name = call.get("event")
        if not isinstance(name, str) or not name.strip():
            raise _invalid([*loc, "event"], "a track call needs an event name", "missing")
        return events.track_type(name), dict(_object(call, "properties", loc)), {}
    if kind in ("page", "screen"):
        properties = dict(_object(call, "properties", loc))
        for field in ("name", "category"):
            value = call.get(field)
            if isinstance(value, str) and value and field not in properties:
                properties[field] = value
        path = _page_path(properties, context) if kind == "page" else None
        if path is not None:
            properties["path"] = path
        return FIXED_TYPES[kind], properties, {}
    if kind == "group":
        group_id = _text_id(call.get("groupId"))
        if group_id is None:
            raise _invalid([*loc, "groupId"], "a group call needs a groupId", "missing")
        group = {"group_id": group_id, "traits": _object(call, "traits", loc)}
        return SEGMENT_GROUP, group, {}
    previous = _text_id(call.get("previousId"))
    if previous is None:
        raise _invalid([*loc, "previousId"], "an alias call needs a previousId", "missing")
    return SEGMENT_ALIAS, {"previous_id": previous}, {}


def _source(context: Mapping[str, Any]) -> str:
    library = context.get("library")
    name = library.get("name") if isinstance(library, dict) else None
    return f"segment/{name}"[:256] if isinstance(name, str) and name.strip() else "segment"


def to_event(
    call: object,
    kind: str | None,
    *,
    received_at: datetime,
    sent_at: object = None,
    batch_context: Mapping[str, Any] | None = None,
    events: EventMap,
    loc: Sequence[str | int] = (),
) -> EventIn:
    """The event one call becomes. ``kind`` is the endpoint's call type; ``None`` in a
    batch, where each call says its own ``type``."""
    where = list(loc)
    if not isinstance(call, dict):
        raise _invalid(where, "a call must be a JSON object", "dict_type")
    stated = call.get("type")
    if kind is None:
        if stated not in CALL_TYPES:
            msg = f"type must be one of {', '.join(CALL_TYPES)}, got {stated!r}"
            raise _invalid([*where, "type"], msg, "literal_error")
        kind = str(stated)
    context = {**(batch_context or {}), **_object(call, "context", where)}
    event_type, properties, traits = _content(kind, call, context, events, where)
    fields: dict[str, Any] = {
        "type": event_type,
        "lead_id": lead_id(call, where),
        "occurred_at": occurred_at(call, sent_at, received_at, where),
        "source": _source(context),
        "properties": properties,
        "traits": traits,
    }
    message_id = _text_id(call.get("messageId"))
    if message_id is not None:
        fields["event_id"] = message_id
    try:
        return EventIn.model_validate(fields)
    except ValidationError as exc:
        raise _refused_fields(exc, where) from exc


def _refused_fields(exc: ValidationError, loc: Sequence[str | int]) -> CallRefused:
    errors = []
    for err in exc.errors(include_url=False, include_input=False):
        parts = list(err["loc"])
        if parts:
            parts[0] = _FIELD_NAMES.get(str(parts[0]), parts[0])
        errors.append(_error([*loc, *parts], err["msg"], err["type"]))
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"][1:])
    return CallRefused("invalid_request", f"{where}: {first['msg']}", errors)


def _decode(body: bytes) -> Any:
    try:
        return parse_json(body)
    except ValueError as exc:
        raise CallRefused(
            "invalid_json",
            "the body is not valid JSON",
            [_error([], f"body is not valid JSON: {exc}", "json_invalid")],
        ) from exc


def with_merge_requests(events: Sequence[EventIn]) -> list[EventIn]:
    """``events`` and, after each identify naming an anonymous id and each alias, the
    ``identity.merge`` of ``anon:<id>`` into the call's lead. Its event id derives from the
    call's, so a retried call asks for the same merge; a call whose lead is the anonymous
    id itself asks for nothing."""
    out: list[EventIn] = []
    for event in events:
        out.append(event)
        if event.type == FIXED_TYPES["identify"]:
            previous = event.properties.get("anonymous_id")
        elif event.type == SEGMENT_ALIAS:
            previous = event.properties.get("previous_id")
        else:
            continue
        if not isinstance(previous, str) or event.lead_id.startswith(ANONYMOUS_PREFIX):
            continue
        anonymous = (ANONYMOUS_PREFIX + previous).strip()
        if anonymous == event.lead_id or len(anonymous) > 256:
            continue
        out.append(
            EventIn(
                event_id=f"merge-{uuid.uuid5(_MERGE_NAMESPACE, event.event_id)}",
                type=IDENTITY_MERGE,
                lead_id=anonymous,
                occurred_at=event.occurred_at,
                source=event.source,
                properties={"into": event.lead_id},
            )
        )
    return out


def decode_call(body: bytes, kind: str, received_at: datetime, events: EventMap) -> EventIn:
    """``POST /v1/<kind>``: one call, at most :data:`MAX_CALL_BYTES` (decompressed)."""
    if len(body) > MAX_CALL_BYTES:
        raise too_large(MAX_CALL_BYTES, "a call")
    call = _decode(body)
    sent_at = call.get("sentAt") if isinstance(call, dict) else None
    return to_event(call, kind, received_at=received_at, sent_at=sent_at, events=events)


def decode_batch(
    body: bytes, received_at: datetime, events: EventMap, max_calls: int
) -> list[EventIn]:
    """``POST /v1/batch``: ``{"batch": [...], "sentAt", "context"}``, all calls valid or
    the request refused naming each bad one (an SDK does not retry a 400, and a call
    silently left out would be lost without a word)."""
    if len(body) > MAX_BATCH_BYTES:
        raise too_large(MAX_BATCH_BYTES, "a batch")
    payload = _decode(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("batch"), list):
        raise _invalid(["batch"], 'a batch is {"batch": [calls...]}', "list_type")
    calls: list[Any] = payload["batch"]
    if not calls:
        raise _invalid(["batch"], "a batch needs at least one call", "too_short")
    if len(calls) > max_calls:
        raise _invalid(
            ["batch"], f"a batch holds at most {max_calls} calls, got {len(calls)}", "too_long"
        )
    context = payload.get("context")
    batch_context = context if isinstance(context, dict) else {}
    accepted: list[EventIn] = []
    errors: list[ErrorItem] = []
    for index, call in enumerate(calls):
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
        if call_size(call, ["batch", index]) > MAX_CALL_BYTES:
            raise too_large(MAX_CALL_BYTES, f"call {index}", ["batch", index])
        try:
            accepted.append(
                to_event(
                    call,
                    None,
                    received_at=received_at,
                    sent_at=payload.get("sentAt"),
                    batch_context=batch_context,
                    events=events,
                    loc=["batch", index],
                )
            )
        except CallRefused as exc:
            errors.extend(exc.errors)
    if errors:
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"][1:])
        raise CallRefused("invalid_request", f"{where}: {first['msg']}", errors)
    return accepted


def call_size(call: object, loc: Sequence[str | int]) -> int:
    """Bytes of one call of a batch as JSON; a call nested deeper than JSON can be written
    back is refused here (the events' own nesting limit is far below)."""
    try:
        return len(orjson.dumps(call))
    except orjson.JSONEncodeError:
        raise _invalid(loc, "nests objects and arrays too deep", "too_deep") from None


def too_large(limit: int, what: str, loc: Sequence[str | int] = ()) -> TooLarge:
    msg = f"{what} is larger than {limit // 1024} KB"
    return TooLarge("payload_too_large", msg, [_error(loc, msg, "too_large")])


def now() -> datetime:
    return datetime.now(UTC)

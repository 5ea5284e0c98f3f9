"""Turning request bodies into validated events, with errors a client can act on.

Pure functions, no I/O: the HTTP layer hands over the content type, the
headers and the body bytes; it gets events back or :class:`InvalidEvents`
naming each bad item by index and field, in FastAPI's error shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from shared import cloudevents
from shared.errors import MAX_REPORTED_ERRORS, unreported
from shared.events import EventIn, parse_json

JSON = "application/json"
SINGLE_TYPES = (JSON, cloudevents.STRUCTURED_CONTENT_TYPE)
BATCH_TYPES = (JSON, cloudevents.BATCH_CONTENT_TYPE)

ErrorItem = dict[str, Any]


_EVENT_FIELDS = frozenset(EventIn.model_fields)


class InvalidEvents(Exception):
    """The request names no valid event set; ``errors`` says where and why: at most
    :data:`~shared.errors.MAX_REPORTED_ERRORS` of them (``shown``), then one entry saying
    how many more there were (``more``) and what was ``unchecked``."""

    def __init__(
        self, errors: list[ErrorItem], more: int = 0, unchecked: str | None = None
    ) -> None:
        self.shown = errors[:MAX_REPORTED_ERRORS]
        self.more = more + len(errors) - len(self.shown)
        super().__init__(f"{len(self.shown) + self.more} invalid field(s)")
        cut = [unreported(self.more, unchecked=unchecked)] if self.more or unchecked else []
        self.errors = [*self.shown, *cut]


class UnsupportedMediaType(Exception):
    def __init__(self, content_type: str, allowed: Sequence[str]) -> None:
        super().__init__(
            f"content type {content_type or '(none)'!r} is not supported; use one of "
            + ", ".join(allowed)
        )


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _error(loc: Sequence[str | int], msg: str, kind: str) -> ErrorItem:
    return {"loc": ["body", *loc], "msg": msg, "type": kind}


def _decode_json(body: bytes) -> Any:
    try:
        return parse_json(body)
    except ValueError as exc:
        raise InvalidEvents([_error([], f"body is not valid JSON: {exc}", "json_invalid")]) from exc


def _validation_errors(
    exc: ValidationError, prefix: Sequence[str | int], rename: Mapping[str, str]
) -> list[ErrorItem]:
    errors = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [rename.get(str(part), part) if i == 0 else part for i, part in enumerate(err["loc"])]
        errors.append(_error([*prefix, *loc], err["msg"], err["type"]))
    return errors


def _refuse_many_unknown_fields(item: dict[str, Any], prefix: Sequence[str | int]) -> None:
    """Past the cap, unknown fields are refused by name without pydantic, which would
    build an error for each of them (seconds of CPU for a body of a few hundred KB)."""
    if len(item) <= len(_EVENT_FIELDS) + MAX_REPORTED_ERRORS:
        return
    unknown = [key for key in item if key not in _EVENT_FIELDS]
    if len(unknown) <= MAX_REPORTED_ERRORS:
        return
    shown = [
        _error([*prefix, key], "Extra inputs are not permitted", "extra_forbidden")
        for key in unknown[:MAX_REPORTED_ERRORS]
    ]
    raise InvalidEvents(shown, more=len(unknown) - len(shown))


def decode_item(item: Any, prefix: Sequence[str | int] = ()) -> EventIn:
    """One event, native or structured CloudEvent, as decoded JSON."""
    if not isinstance(item, dict):
        raise InvalidEvents([_error(prefix, "an event must be a JSON object", "dict_type")])
    rename: Mapping[str, str] = {}
    fields: Any = item
    if not cloudevents.is_cloudevent(item):
        _refuse_many_unknown_fields(item, prefix)
    else:
        rename = cloudevents.CE_FIELD_NAMES
        try:
            fields = cloudevents.native_fields(item)
        except ValidationError as exc:
            raise InvalidEvents(_validation_errors(exc, prefix, {})) from exc
    try:
        return EventIn.model_validate(fields)
    except ValidationError as exc:
        raise InvalidEvents(_validation_errors(exc, prefix, rename)) from exc


def decode_single(content_type: str | None, headers: Mapping[str, str], body: bytes) -> EventIn:
    """``POST /v1/events``: native JSON, or a CloudEvent in structured or binary mode.

    Binary mode without ``Content-Type`` is how the CloudEvents SDKs send an event whose
    ``datacontenttype`` is unset: its data is read as JSON, the type an event without
    ``datacontenttype`` has in the JSON event format (and leadflow's data is an object).
    """
    kind = media_type(content_type)
    binary = "ce-specversion" in headers and kind in (JSON, "")
    if kind not in SINGLE_TYPES and not binary:
        raise UnsupportedMediaType(kind, SINGLE_TYPES)
    payload = _decode_json(body)
    if binary:
        try:
            payload = cloudevents.binary_to_structured(headers, payload)
        except cloudevents.InvalidHeader as exc:
            loc = [f"{cloudevents.HEADER_PREFIX}{exc.attribute}"]
            raise InvalidEvents([_error(loc, str(exc), "value_error")]) from exc
    elif kind == cloudevents.STRUCTURED_CONTENT_TYPE and not cloudevents.is_cloudevent(payload):
        raise InvalidEvents([_error(["specversion"], "Field required", "missing")])
    return decode_item(payload)


def decode_batch(content_type: str | None, body: bytes, max_events: int) -> list[EventIn]:
    """``POST /v1/events/batch``: all items valid, or every bad one reported."""
    kind = media_type(content_type)
    if kind not in BATCH_TYPES:
        raise UnsupportedMediaType(kind, BATCH_TYPES)
    payload = _decode_json(body)
    if kind == JSON and isinstance(payload, dict) and set(payload) == {"events"}:
        payload = payload["events"]
    if not isinstance(payload, list):
        raise InvalidEvents(
            [_error([], 'a batch is a JSON array or {"events": [...]}', "list_type")]
        )
    if not payload:
        raise InvalidEvents([_error([], "a batch needs at least one event", "too_short")])
    if len(payload) > max_events:
        msg = f"a batch holds at most {max_events} events, got {len(payload)}"
        raise InvalidEvents([_error([], msg, "too_long")])
    events: list[EventIn] = []
    errors: list[ErrorItem] = []
    more = 0
    for index, item in enumerate(payload):
        if len(errors) >= MAX_REPORTED_ERRORS:  # enough to act on: stop spending CPU
            unchecked = f"items {index} to {len(payload) - 1} not checked"
            raise InvalidEvents(errors, more, unchecked)
        if kind == cloudevents.BATCH_CONTENT_TYPE and not cloudevents.is_cloudevent(item):
            errors.append(_error([index, "specversion"], "Field required", "missing"))
            continue
        try:
            events.append(decode_item(item, [index]))
        except InvalidEvents as exc:
            errors.extend(exc.shown)
            more += exc.more
    if errors:
        raise InvalidEvents(errors, more)
    return events

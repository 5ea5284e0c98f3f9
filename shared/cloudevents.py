"""CloudEvents 1.0 <-> native envelope mapping (docs/architecture.md §4).

Mapping: ``id`` <-> event_id, ``type`` <-> type, ``source`` <-> source,
``subject`` <-> lead_id, ``time`` <-> occurred_at, ``data`` <-> properties and
traits. ``data.traits`` becomes the traits; ``data.properties``, when present,
becomes the properties, otherwise every other key of ``data`` does. So a
platform that sends ``{"campaign": "nov"}`` as data needs no wrapper, and a
round trip through :func:`to_cloudevent` is lossless.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import unquote_to_bytes

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, field_validator

from shared.events import (
    Attributes,
    Event,
    EventIn,
    EventType,
    Identifier,
    StageChange,
    UtcTime,
    format_time,
)

SPECVERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
HEADER_PREFIX = "ce-"


class CloudEventData(BaseModel):
    """``data``: ``traits``, and ``properties`` or else every other key as the properties."""

    model_config = ConfigDict(
        extra="allow",
        # the other keys become property names when there is no "properties" key
        json_schema_extra={"propertyNames": {"minLength": 1, "maxLength": 256}},
    )

    traits: Attributes = Field(default_factory=dict)
    properties: Attributes | None = None

    def split(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(properties, traits)`` of the native envelope."""
        if self.properties is not None:
            return dict(self.properties), dict(self.traits)
        return dict(self.model_extra or {}), dict(self.traits)


class CloudEventIn(BaseModel):
    """The CloudEvents attributes leadflow reads, with the native envelope's rules;
    extension attributes are ignored."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: Identifier | None = Field(default=None, description="The event_id; assigned when null.")
    type: EventType
    source: Annotated[str, StringConstraints(max_length=256)]
    subject: Identifier = Field(description="The lead_id.")
    time: UtcTime = Field(description="occurred_at: optional in CloudEvents, required here.")
    datacontenttype: str | None = None
    data: CloudEventData | None = None

    @field_validator("data", mode="before")
    @classmethod
    def _data_is_an_object(cls, value: object) -> object:
        if value is not None and not isinstance(value, Mapping | CloudEventData):
            raise ValueError("data must be a JSON object")
        return value


def is_cloudevent(item: object) -> bool:
    return isinstance(item, Mapping) and "specversion" in item


def native_fields(cloudevent: Mapping[str, Any]) -> dict[str, Any]:
    """The native envelope fields of a structured CloudEvent.

    :class:`CloudEventIn` applies the envelope's rules, so field errors name
    CloudEvents attributes. What only the whole event can check (the size of
    properties and traits) is left to :class:`EventIn`, whose errors
    :data:`CE_FIELD_NAMES` translates back for the client.
    """
    ce = CloudEventIn.model_validate(cloudevent)
    properties, traits = ce.data.split() if ce.data is not None else ({}, {})
    fields: dict[str, Any] = {
        "type": ce.type,
        "lead_id": ce.subject,
        "occurred_at": ce.time,
        "source": ce.source,
        "properties": properties,
        "traits": traits,
    }
    if ce.id is not None:
        fields["event_id"] = ce.id
    return fields


CE_FIELD_NAMES = {
    "event_id": "id",
    "lead_id": "subject",
    "occurred_at": "time",
    "properties": "data",
    "traits": "data",
}


def from_cloudevent(cloudevent: Mapping[str, Any]) -> EventIn:
    """A structured-mode CloudEvent as a native event."""
    return EventIn.model_validate(native_fields(cloudevent))


class InvalidHeader(ValueError):
    """A ``ce-*`` header value the HTTP binding cannot decode; ``attribute`` names it."""

    def __init__(self, attribute: str, reason: str) -> None:
        super().__init__(reason)
        self.attribute = attribute


def _unquoted(value: str) -> str:
    """RFC 7230 quoted-string escaping undone, as the binding requires of a receiver
    (older senders quoted values instead of percent-encoding spaces)."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def decode_header_value(attribute: str, value: str) -> str:
    """One binary-mode header value as the attribute it carries (HTTP binding 3.1.3.2):
    unquoted, then one round of percent-decoding, the bytes UTF-8 (an invalid sequence,
    overlong ones included, refused). A raw non-ASCII character, as senders that do not
    encode send it, reads as itself, so both kinds of sender name the same lead."""
    try:
        return unquote_to_bytes(_unquoted(value.strip())).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidHeader(attribute, "percent-encodes bytes that are not UTF-8") from None


def binary_to_structured(headers: Mapping[str, str], data: JsonValue) -> dict[str, Any]:
    """HTTP binary mode: attributes in ``ce-*`` headers, decoded; the body is ``data``."""
    attributes: dict[str, Any] = {}
    for name, value in headers.items():
        if name.lower().startswith(HEADER_PREFIX):
            attribute = name[len(HEADER_PREFIX) :].lower()
            attributes[attribute] = decode_header_value(attribute, value)
    attributes["data"] = data
    return attributes


def to_cloudevent(event: Event) -> dict[str, Any]:
    """A native event as a structured-mode CloudEvent (for CRMs that want one)."""
    ce: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": event.event_id,
        "type": event.type,
        "source": event.source or "leadflow",
        "subject": event.lead_id,
        "time": format_time(event.occurred_at),
        "datacontenttype": "application/json",
        "data": {"properties": event.properties, "traits": event.traits},
    }
    return ce


# --- the Kafka protocol binding (binary mode), for what scoring publishes --------------

KAFKA_HEADER_PREFIX = "ce_"
STAGE_CHANGED_TYPE = "leadflow.stage.changed"
SCORE_UPDATED_TYPE = "leadflow.score.updated"
SCORING_SOURCE = "leadflow/scoring"


class Scored(Protocol):
    """What the headers need of a score update: :class:`ScoreUpdate`, or scoring's own
    plain-valued one, which it encodes without building the model."""

    @property
    def lead_id(self) -> str: ...
    @property
    def sequence(self) -> int: ...
    @property
    def as_of(self) -> datetime: ...


def kafka_headers(change: StageChange | Scored) -> list[tuple[str, bytes]]:
    """The ``ce_*`` headers (and ``content-type``) that make a record of
    ``leadflow.stage-changes`` or ``leadflow.scores`` a binary-mode CloudEvent under the
    Kafka binding: its value is then the event's ``data``, unchanged for every reader
    that ignores headers. The id is the change's own (``change_id``, or lead and
    sequence for a score), so a re-published record is the same CloudEvent."""
    if isinstance(change, StageChange):
        kind, event_id, time = STAGE_CHANGED_TYPE, change.change_id, change.occurred_at
    else:
        kind, event_id, time = (
            SCORE_UPDATED_TYPE,
            f"{change.lead_id}/{change.sequence}",
            change.as_of,
        )
    attributes = {
        "specversion": SPECVERSION,
        "id": event_id,
        "source": SCORING_SOURCE,
        "type": kind,
        "subject": change.lead_id,
        "time": format_time(time),
    }
    headers = [(KAFKA_HEADER_PREFIX + name, value.encode()) for name, value in attributes.items()]
    return [*headers, ("content-type", b"application/json")]

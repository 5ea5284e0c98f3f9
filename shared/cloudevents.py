"""CloudEvents 1.0 <-> native envelope mapping (DESIGN section 4).

Mapping: ``id`` <-> event_id, ``type`` <-> type, ``source`` <-> source,
``subject`` <-> lead_id, ``time`` <-> occurred_at, ``data`` <-> properties and
traits. ``data.traits`` becomes the traits; ``data.properties``, when present,
becomes the properties, otherwise every other key of ``data`` does. So a
platform that sends ``{"campaign": "nov"}`` as data needs no wrapper, and a
round trip through :func:`to_cloudevent` is lossless.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from shared.events import Event, EventIn, format_time

SPECVERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
HEADER_PREFIX = "ce-"


class CloudEventIn(BaseModel):
    """The CloudEvents attributes leadflow reads; extension attributes are ignored."""

    model_config = ConfigDict(extra="allow")

    specversion: str = Field(pattern=r"^1\.0$")
    id: str | None = None
    type: str
    source: str
    subject: str = Field(description="The lead_id.")
    time: str | None = Field(default=None, description="Required by leadflow: occurred_at.")
    datacontenttype: str | None = None
    data: JsonValue = None


def is_cloudevent(item: object) -> bool:
    return isinstance(item, Mapping) and "specversion" in item


def _split_data(data: JsonValue) -> tuple[dict[str, Any], dict[str, Any]]:
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ValueError("data must be a JSON object")
    traits = data.get("traits", {})
    if "properties" in data:
        properties = data["properties"]
    else:
        properties = {k: v for k, v in data.items() if k != "traits"}
    return properties, traits  # type: ignore[return-value]


def native_fields(cloudevent: Mapping[str, Any]) -> dict[str, Any]:
    """The native envelope fields of a structured CloudEvent, before validation.

    Field errors are then reported by :class:`EventIn` under native names;
    :data:`CE_FIELD_NAMES` translates them back for the client.
    """
    ce = CloudEventIn.model_validate(cloudevent)
    properties, traits = _split_data(ce.data)
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


def binary_to_structured(headers: Mapping[str, str], data: JsonValue) -> dict[str, Any]:
    """HTTP binary mode: attributes in ``ce-*`` headers, the body is ``data``."""
    attributes: dict[str, Any] = {
        name[len(HEADER_PREFIX) :]: value
        for name, value in headers.items()
        if name.lower().startswith(HEADER_PREFIX)
    }
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

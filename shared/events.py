"""The one event schema module: what flows through leadflow's topics.

- :class:`Event` is the native envelope on ``leadflow.events`` (docs/architecture.md §4).
- :class:`StageChange` is published on ``leadflow.stage-changes``.
- :class:`ScoreUpdate` is published on the compacted ``leadflow.scores``.
- :data:`LEAD_ERASED` is the internal event type that erases a lead: only the pipeline's
  erasure endpoint writes it, and clients cannot post it (:class:`EventIn` refuses it).

Validation is strict on purpose: platforms retry, CRMs trust what we emit,
so a malformed event is refused at the door with the field that is wrong,
rather than scored wrongly later.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    StringConstraints,
    model_validator,
)

MAX_EVENT_BYTES = 64 * 1024
"""Largest serialised properties + traits of one event: bigger is a payload, not an event."""

MAX_NESTING_DEPTH = 32
"""How deep ``properties`` and ``traits`` may nest objects and arrays, themselves level 1.

One rule for ingest and scoring alike, far below where any parser on the way gives up
(pydantic's JSON parser at 200 levels of a whole event, orjson at 254, pydantic's
validation of decoded JSON a little above), so an event ingest accepts is one scoring
can read, score and store in its changelog: a 202 means scored.
"""

MAX_FUTURE_SKEW = timedelta(days=1)
"""An event may claim a time this far ahead of our clock (clock skew), no further."""

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

NO_CONTROL_CHARS_PATTERN = r"^[^\x00-\x1f\x7f]*$"
"""What :func:`no_control_chars` accepts, for JSON Schema."""

IDENTIFIER_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
"""What :data:`Identifier` accepts, for JSON Schema: no control characters, not blank."""

RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt]"
    r"[0-9]{2}:[0-9]{2}:[0-5][0-9](\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
"""The shape of an RFC 3339 date-time (leap seconds excluded: Python cannot represent them)."""

_RFC3339 = re.compile(RFC3339_PATTERN)


def no_control_chars(value: str) -> str:
    """``value``, or ValueError: ids are printable (and PostgreSQL text cannot hold NUL)."""
    if _CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters")
    return value


def _text_or_datetime(value: object) -> object:
    """Numbers are refused, in strings too: seconds or milliseconds since the epoch would be a
    guess, and so would the other shapes pydantic would parse (``+0100``, a space for ``T``)."""
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339.fullmatch(value)):
        return value
    raise ValueError("must be an RFC 3339 date-time string with a UTC offset")


def _utc(value: datetime) -> datetime:
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00, 9999-12-31T23:00:00-02:00
        raise ValueError("is out of range once converted to UTC") from None
    if value > datetime.now(UTC) + MAX_FUTURE_SKEW:
        raise ValueError("is more than one day in the future")
    return value


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, microseconds only when there are some."""
    text = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


Identifier = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=256),
    AfterValidator(no_control_chars),
    Field(json_schema_extra={"pattern": IDENTIFIER_PATTERN}),
]
EventType = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$", max_length=128),
]
UtcTime = Annotated[
    AwareDatetime,
    BeforeValidator(_text_or_datetime),
    AfterValidator(_utc),
    PlainSerializer(format_time, return_type=str, when_used="json"),
    Field(json_schema_extra={"pattern": RFC3339_PATTERN}),
]
LEAD_ERASED = "lead.erased"
"""The event that erases its lead: scoring drops the state and writes tombstones, the
pipeline deletes the rows. Written only by ``DELETE /v1/leads/{lead_id}``."""

INTERNAL_EVENT_TYPES = frozenset({LEAD_ERASED})
"""Event types leadflow writes itself and no client may post."""

DEAL_WON = "deal.won"
LEAD_DISQUALIFIED = "lead.disqualified"
STAGE_SET = "stage.set"
CRM_EVENT_TYPES = frozenset({DEAL_WON, LEAD_DISQUALIFIED, STAGE_SET})
"""Event types that record a CRM's decision about a lead: posting them needs ``crm:write``,
and their properties follow :func:`crm_move`."""


def crm_move(event_type: str, properties: Mapping[str, JsonValue]) -> tuple[Stage, str] | None:
    """The stage a CRM event moves its lead to and the reason it gives; ``None`` for others.

    Raises ``ValueError`` naming the bad property. The one rule: :class:`Event` applies it,
    so ingest refuses what the stage machine could not apply, and a 202 means scored.
    """
    if event_type == DEAL_WON:
        return Stage.CUSTOMER, _crm_reason(event_type, properties)
    if event_type == LEAD_DISQUALIFIED:
        return Stage.DISQUALIFIED, _crm_reason(event_type, properties)
    if event_type != STAGE_SET:
        return None
    stage = properties.get("stage")
    if not isinstance(stage, str) or stage not in set(Stage):
        allowed = ", ".join(Stage)
        raise ValueError(f"stage.set: properties.stage must be one of {allowed}, got {stage!r}")
    return Stage(stage), _crm_reason(event_type, properties)


def _crm_reason(event_type: str, properties: Mapping[str, JsonValue]) -> str:
    reason = properties.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ValueError(f"{event_type}: properties.reason must be a string, got {reason!r}")
    return f"{event_type}: {reason.strip()}" if reason and reason.strip() else event_type


ANONYMOUS_PREFIX = "anon:"
"""The lead id of a visitor known only by a device or cookie id (Segment's ``anonymousId``):
the only kind of lead an identity merge retires (docs/architecture.md §5.12)."""

IDENTITY_MERGE = "identity.merge"
"""The request that merges its lead, an anonymous visitor, into ``properties.into``: keyed
by the anonymous id, so it reaches the partition that owns the anonymous state."""


def merge_target(event_type: str, lead_id: str, properties: Mapping[str, JsonValue]) -> str | None:
    """The lead an ``identity.merge`` merges its anonymous lead into; ``None`` for other
    types. Raises ``ValueError`` naming the bad property: one rule for ingest and scoring."""
    if event_type != IDENTITY_MERGE:
        return None
    into = properties.get("into")
    if not isinstance(into, str) or not into.strip() or len(into) > 256:
        raise ValueError(f"{IDENTITY_MERGE}: properties.into must be a lead id, got {into!r}")
    no_control_chars(into)
    if not lead_id.startswith(ANONYMOUS_PREFIX):
        raise ValueError(
            f"{IDENTITY_MERGE}: only an anonymous lead ({ANONYMOUS_PREFIX}...) is merged,"
            f" not {lead_id!r}"
        )
    if into.startswith(ANONYMOUS_PREFIX) or into.strip() == lead_id:
        raise ValueError(f"{IDENTITY_MERGE}: properties.into must be a known lead, got {into!r}")
    return into.strip()


ERASE_ID_HEADER = "leadflow-erase-id"
"""Header of the erasure signals (null-valued records keyed by the lead id on
``leadflow.scores`` and ``leadflow.stage-changes``): the erase request they complete."""

ERASE_REQUESTED_AT_HEADER = "leadflow-erase-requested-at"
"""Header of the erasure signals: when the erasure was requested (RFC 3339, UTC)."""


def _postable_type(value: str) -> str:
    if value in INTERNAL_EVENT_TYPES:
        raise ValueError(
            f"{value!r} is an internal event type that clients cannot post"
            " (erase a lead with DELETE /v1/leads/{lead_id} on the pipeline)"
        )
    return value


def nesting_depth_exceeds(value: object, limit: int) -> bool:
    """Whether ``value`` holds objects or arrays more than ``limit`` levels deep (``value``
    itself is level 1). A loop, not recursion: the input is what is being bounded."""
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _bounded_nesting(value: object) -> object:
    """Run before pydantic's own validation, whose recursion (like orjson's, and the JSON
    parser's when scoring reads the event back) has limits of its own below Python's."""
    if nesting_depth_exceeds(value, MAX_NESTING_DEPTH):
        raise ValueError(f"nests objects and arrays more than {MAX_NESTING_DEPTH} levels deep")
    return value


Attributes = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=256)], JsonValue],
    BeforeValidator(_bounded_nesting),
]


class Stage(StrEnum):
    """The pipeline stages (docs/architecture.md §1), in their forward order."""

    LEAD = "lead"
    PROSPECT = "prospect"
    OPPORTUNITY = "opportunity"
    CUSTOMER = "customer"
    DISQUALIFIED = "disqualified"


class Event(BaseModel):
    """One engagement event or attribute update about one lead.

    ``traits`` carry ideal-customer-profile attributes (latest value wins);
    ``properties`` describe the engagement itself (campaign, path...).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier = Field(description="Unique per event; retries reuse it.")
    type: EventType = Field(description="email.clicked, form.submitted, lead.updated, ...")
    lead_id: Identifier = Field(description="The lead this event is about (often an email).")
    occurred_at: UtcTime = Field(description="When it happened (RFC 3339 with offset).")
    source: Annotated[str, StringConstraints(max_length=256)] | None = None
    properties: Attributes = Field(default_factory=dict)
    traits: Attributes = Field(default_factory=dict)

    @model_validator(mode="after")
    def _applicable_crm_move(self) -> Event:
        crm_move(self.type, self.properties)
        return self

    @model_validator(mode="after")
    def _applicable_merge(self) -> Event:
        merge_target(self.type, self.lead_id, self.properties)
        return self

    @model_validator(mode="after")
    def _bounded_size(self) -> Event:
        size = len(orjson.dumps(self.properties)) + len(orjson.dumps(self.traits))
        if size > MAX_EVENT_BYTES:
            raise ValueError(
                f"properties and traits take {size} bytes, more than the {MAX_EVENT_BYTES} allowed"
            )
        return self

    def to_json(self) -> bytes:
        """The record value on ``leadflow.events``."""
        return self.model_dump_json(exclude_none=True).encode()


class EventIn(Event):
    """An event as a client posts it: ``event_id`` may be left for us to assign, and the
    internal types (:data:`INTERNAL_EVENT_TYPES`) are refused."""

    event_id: Identifier = Field(
        default_factory=lambda: str(uuid.uuid4()),
        description="Unique per event; retries must reuse it. Assigned when missing.",
    )
    type: Annotated[EventType, AfterValidator(_postable_type)] = Field(
        description="email.clicked, form.submitted, lead.updated, ... (not lead.erased)."
    )


class Score(BaseModel):
    model_config = ConfigDict(frozen=True)

    fit: float
    engagement: float
    total: float


class RuleContribution(BaseModel):
    """How much one rule of the model adds to a lead's score, and why."""

    model_config = ConfigDict(frozen=True)

    rule: str
    axis: str  # "fit" or "engagement"
    points: float
    count: int = 1


class StageChange(BaseModel):
    """A lead moved from one stage to another; ``(lead_id, sequence)`` identifies it."""

    model_config = ConfigDict(frozen=True)

    change_id: str
    lead_id: str
    sequence: int
    from_stage: Stage | None
    to_stage: Stage
    reason: str
    trigger_event_id: str
    occurred_at: UtcTime
    score: Score
    model_version: str
    source: str | None = Field(
        default=None,
        description=(
            "The source of the event that caused the change (the event's own `source`); "
            "on a lead's first change, the source that created the lead."
        ),
    )


class ScoreUpdate(BaseModel):
    """The latest score of a lead; ``sequence`` orders updates of one lead."""

    model_config = ConfigDict(frozen=True)

    lead_id: str
    sequence: int
    fit: float
    engagement: float
    total: float
    as_of: UtcTime
    stage: Stage
    model_version: str
    trigger_event_id: str
    breakdown: list[RuleContribution]
    half_life_seconds: float | None = None
    """The model's engagement half-life: what a reader decays ``engagement`` with to value
    the lead at a later time (``None`` from producers that predate it: no decay)."""
    merged_from: str | None = None
    """On the update an identity merge gives the known lead: the anonymous lead merged in
    (docs/architecture.md §5.12), which is an alias of this lead from then on."""


def parse_json(raw: bytes | str) -> Any:
    """Decode JSON with orjson; raises ``orjson.JSONDecodeError`` (a ValueError)."""
    return orjson.loads(raw)

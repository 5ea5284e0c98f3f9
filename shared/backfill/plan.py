"""What ``leadflow import`` will send, decided before anything is sent: pure, no I/O.

Every row is checked by the one event schema (:class:`~shared.events.EventIn`, so what
passes here ingest accepts) and its lead id normalised as ingest does; an event without
an ``event_id`` gets one derived from its content, so importing the same file twice
sends the same ids and scoring counts each event once. The events are then sent in
event-time order, which is time order per lead: scoring then never meets an event of
the file older than one it already applied from it.

The de-duplication horizon (docs/architecture.md §5.5) is checked per lead against what
the system already holds: scoring can no longer tell an event older than its lead's
newest event by more than the horizon from a retry, and dead-letters it. A lead whose
part of the file holds such an event is refused as a whole (none of its events sent,
each refusal listed), rather than imported in part: its score then stays the one of the
events it has, instead of one of an arbitrary part of its history.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
from pydantic import ValidationError

from shared.backfill.formats import LineError, Row
from shared.events import EventIn, format_time
from shared.lead_ids import LeadIdRule, normalize

_IMPORT_NAMESPACE = uuid.UUID("5d0f9a52-8a3c-4f43-9a57-1d5e2b7c9e10")


@dataclass(frozen=True, slots=True)
class Imported:
    """One checked event and the line it came from."""

    line: int
    event: EventIn


@dataclass
class Checked:
    """The file's events, checked, de-duplicated and in the order they are to be sent."""

    events: list[Imported] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    read: int = 0
    """Rows (CSV) or non-blank lines (JSON Lines) read."""
    duplicates: int = 0
    """Rows repeating an earlier row's event (same lead, same event_id, same content)."""

    @property
    def lead_ids(self) -> list[str]:
        return sorted({item.event.lead_id for item in self.events})


@dataclass(frozen=True, slots=True)
class LeadFacts:
    """What the system already holds of a lead, as far as the horizon is concerned."""

    as_of: datetime | None
    """The newest event time its score includes; ``None`` before its first score."""


@dataclass(frozen=True, slots=True)
class RefusedLead:
    lead_id: str
    events: int
    """The lead's events in the file: none of them is sent."""
    too_old: int
    """How many of them are older than the horizon allows."""
    oldest: datetime
    as_of: datetime
    horizon: timedelta
    newest_in_file: datetime

    @property
    def cutoff(self) -> datetime:
        return self.as_of - self.horizon

    def reason(self) -> str:
        days = self.horizon / timedelta(days=1)
        text = (
            f"lead {self.lead_id}: refused, none of its {self.events} events sent: "
            f"{self.too_old} are older than {format_time(self.cutoff)}, {days:g} days "
            f"(the de-duplication horizon) before its newest event ({format_time(self.as_of)}), "
            f"oldest {format_time(self.oldest)}; scoring would dead-letter them"
        )
        if self.as_of == self.newest_in_file:
            text += (
                "; its newest event has the time of its newest in this file: if an earlier "
                "import of this file loaded it, there is nothing left to do"
            )
        return text


@dataclass
class Plan:
    send: list[Imported] = field(default_factory=list)
    """In the order to send: event time, then line."""
    refused: list[RefusedLead] = field(default_factory=list)
    horizon: timedelta = timedelta(days=30)

    @property
    def refused_events(self) -> int:
        return sum(lead.events for lead in self.refused)

    def batches(self, size: int) -> list[list[Imported]]:
        return [self.send[start : start + size] for start in range(0, len(self.send), size)]


def check(rows: Iterable[Row | LineError], rule: LeadIdRule) -> Checked:
    """Each row validated as ingest validates it; the valid ones ordered by event time."""
    checked = Checked()
    first: dict[tuple[str, str], Imported] = {}
    for row in rows:
        if isinstance(row, LineError):
            if not checked.errors or checked.errors[-1].line != row.line:
                checked.read += 1  # a row may have several errors: count it once
            checked.errors.append(row)
            continue
        checked.read += 1
        event = _event(row, rule, checked.errors)
        if event is None:
            continue
        key = (event.lead_id, event.event_id)
        earlier = first.get(key)
        if earlier is None:
            first[key] = Imported(row.line, event)
        elif earlier.event == event:
            checked.duplicates += 1
        else:
            checked.errors.append(
                LineError(
                    row.line,
                    "event_id",
                    f"{event.event_id!r} is already the id of another event of lead "
                    f"{event.lead_id!r} (line {earlier.line})",
                )
            )
    checked.events = sorted(first.values(), key=lambda item: (item.event.occurred_at, item.line))
    checked.errors.sort(key=lambda error: error.line)
    return checked


def _event(row: Row, rule: LeadIdRule, errors: list[LineError]) -> EventIn | None:
    try:
        event = EventIn.model_validate(row.fields)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "event"
            errors.append(LineError(row.line, where, error["msg"]))
        return None
    update: dict[str, str] = {}
    lead_id = normalize(event.lead_id, rule)
    if lead_id != event.lead_id:
        update["lead_id"] = lead_id
    if not row.fields.get("event_id"):
        update["event_id"] = content_id(event.model_copy(update=update))
    return event.model_copy(update=update) if update else event


def content_id(event: EventIn) -> str:
    """An id for an event the file gives none: the same content, the same id, every run."""
    content = event.model_dump(mode="json", exclude={"event_id"}, exclude_none=True)
    canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS).decode()
    return f"import-{uuid.uuid5(_IMPORT_NAMESPACE, canonical)}"


def plan(checked: Checked, facts: Mapping[str, LeadFacts], horizon: timedelta) -> Plan:
    """What to send, given what the system holds of each lead (a lead it does not know is
    absent from ``facts``)."""
    by_lead: dict[str, list[Imported]] = defaultdict(list)
    for item in checked.events:
        by_lead[item.event.lead_id].append(item)
    refused: dict[str, RefusedLead] = {}
    for lead_id, items in by_lead.items():
        known = facts.get(lead_id)
        if known is None or known.as_of is None:
            continue
        cutoff = known.as_of - horizon
        too_old = [item for item in items if item.event.occurred_at < cutoff]
        if too_old:
            refused[lead_id] = RefusedLead(
                lead_id=lead_id,
                events=len(items),
                too_old=len(too_old),
                oldest=items[0].event.occurred_at,
                as_of=known.as_of,
                horizon=horizon,
                newest_in_file=items[-1].event.occurred_at,
            )
    return Plan(
        send=[item for item in checked.events if item.event.lead_id not in refused],
        refused=sorted(refused.values(), key=lambda lead: lead.lead_id),
        horizon=horizon,
    )

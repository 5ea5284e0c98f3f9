"""Sending a plan, batch after batch, and the summary of what came of it.

The two things it needs from the system are seams (:class:`EventSink`, :class:`LeadFactsSource`),
so the whole import is tested without servers; :mod:`.client` implements both over HTTP.
Batches go one at a time: ingest keys each event by its lead, so sending in order keeps
each lead's events in time order on its partition, which is what the plan was checked for.

A batch that cannot be delivered (ingest down longer than the retries, a refused key)
stops the import there. Whatever was sent before was accepted and stays. The next run of
the same file sends again what lies within the horizon of each lead's newest event, which
scoring de-duplicates by ``event_id``, and refuses the leads whose history reaches beyond
it (scoring could not tell those resends from new events): nothing accepted counts twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from shared.backfill.formats import LineError
from shared.backfill.plan import Checked, Imported, LeadFacts, Plan, plan
from shared.errors import MAX_REPORTED_ERRORS
from shared.events import EventIn


@dataclass(frozen=True, slots=True)
class Rejection:
    event: EventIn
    reason: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """What ingest made of one batch: every event not rejected was accepted."""

    rejected: Sequence[Rejection] = ()


class ImportStopped(Exception):
    """The import cannot go on (the message says why, for a person); nothing of the batch
    being sent was accepted."""


class EventSink(Protocol):
    async def send(self, events: Sequence[EventIn]) -> Delivery: ...


class LeadFactsSource(Protocol):
    async def facts(self, lead_ids: Collection[str]) -> Mapping[str, LeadFacts]:
        """What the system holds of each lead it knows; the others are left out."""
        ...


@dataclass(frozen=True, slots=True)
class Progress:
    sent: int
    total: int
    leads: int
    elapsed: float

    def line(self) -> str:
        share = self.sent / self.total if self.total else 1.0
        return (
            f"leadflow import: {self.sent}/{self.total} events sent ({share:.0%}), "
            f"{self.leads} leads, {self.elapsed:.1f} s"
        )


@dataclass
class Summary:
    checked: Checked
    plan: Plan
    dry_run: bool = False
    sent: int = 0
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    leads: set[str] = field(default_factory=set)
    """Leads with at least one event accepted."""
    stopped: str | None = None
    """Why the import stopped before the end of the plan."""
    elapsed: float = 0.0
    """The whole import: reading, checking, asking the pipeline, sending, waiting."""
    shown: int | None = None
    """Touched leads the pipeline shows with their newest imported event; ``None``: not
    waited for."""
    unshown: str | None = None
    """Why some touched leads were not seen in the pipeline."""

    @property
    def complete(self) -> bool:
        """Every event of the file is in the system (or, dry: would be)."""
        return not (
            self.checked.errors or self.plan.refused or self.rejected or self.stopped is not None
        )

    def lines(self) -> list[str]:
        checked, planned = self.checked, self.plan
        would = "would send" if self.dry_run else "sent"
        lines = [
            f"read        {checked.read} rows, {len(checked.events)} distinct valid events",
            f"invalid     {_lines(checked.errors)} (not sent)",
            f"duplicates  {checked.duplicates} rows repeating an earlier row's event (sent once)",
            f"refused     {planned.refused_events} events of {len(planned.refused)} leads"
            " (history beyond the de-duplication horizon; not sent)",
            f"{would:<11} {len(planned.send) if self.dry_run else self.sent}",
        ]
        if not self.dry_run:
            lines += [
                f"accepted    {self.accepted}",
                f"rejected    {len(self.rejected)} by ingest",
                f"leads       {len(self.leads)} touched",
            ]
            if self.shown is not None and self.leads:
                lines.append(
                    f"scored      {self.shown} leads shown by the pipeline as of their newest"
                    " imported event"
                )
        else:
            lines.append(f"leads       {len({i.event.lead_id for i in planned.send})} to touch")
        lines.append(f"elapsed     {self.elapsed:.1f} s")
        if self.stopped is not None:
            unsent = len(planned.send) - self.sent
            lines.append(f"stopped     {unsent} events not sent: {self.stopped}")
        if self.unshown is not None:
            lines.append(f"not shown   {self.unshown}")
        lines += _capped([str(error) for error in checked.errors])
        lines += _capped([lead.reason() for lead in planned.refused])
        lines += _capped(
            [f"event {r.event.event_id} of {r.event.lead_id}: {r.reason}" for r in self.rejected]
        )
        return lines


def _lines(errors: Sequence[LineError]) -> str:
    return f"{len({error.line for error in errors})} rows, {len(errors)} errors"


def _capped(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_REPORTED_ERRORS:
        return lines
    return [*lines[:MAX_REPORTED_ERRORS], f"... and {len(lines) - MAX_REPORTED_ERRORS} more"]


async def prepare(checked: Checked, facts: LeadFactsSource, horizon: timedelta) -> Plan:
    known = await facts.facts(checked.lead_ids) if checked.events else {}
    return plan(checked, known, horizon)


async def send_plan(
    summary: Summary,
    sink: EventSink,
    batch_size: int,
    progress: Callable[[Progress], None],
    clock: Callable[[], float] = time.monotonic,
    progress_every: float = 1.0,
) -> Summary:
    """Send ``summary.plan``'s events, filling in ``summary``; a progress report at most every
    ``progress_every`` seconds, and after the last batch."""
    started = clock()
    reported = started
    total = len(summary.plan.send)
    for batch in summary.plan.batches(batch_size):
        try:
            delivery = await sink.send([item.event for item in batch])
        except ImportStopped as exc:
            summary.stopped = str(exc)
            break
        _count(summary, batch, delivery)
        now = clock()
        if now - reported >= progress_every or summary.sent == total:
            progress(Progress(summary.sent, total, len(summary.leads), now - started))
            reported = now
    return summary


async def wait_until_shown(
    summary: Summary,
    facts: LeadFactsSource,
    timeout: float,
    progress: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    interval: float = 0.5,
) -> Summary:
    """Until the pipeline shows every touched lead as of its newest accepted event.

    Accepted is not yet scored: the next import (a re-run, the next file) checks the
    horizon against what the pipeline shows, so this one ends once that includes it.
    A lead may show a newer time still (a live event), which serves the check as well.
    """
    rejected = {(r.event.lead_id, r.event.event_id) for r in summary.rejected}
    pending: dict[str, datetime] = {}
    for item in summary.plan.send[: summary.sent]:
        event = item.event
        if (event.lead_id, event.event_id) not in rejected:
            newest = pending.get(event.lead_id)
            pending[event.lead_id] = max(newest or event.occurred_at, event.occurred_at)
    touched, started, rounds = len(pending), clock(), 0
    while pending:
        try:
            known = await facts.facts(list(pending))
        except ImportStopped as exc:
            summary.unshown = f"{len(pending)} leads not confirmed: {exc}"
            break
        for lead_id, lead in known.items():
            as_of = lead.as_of
            if as_of is not None and as_of >= pending[lead_id]:
                del pending[lead_id]
        if not pending:
            break
        if clock() - started >= timeout:
            summary.unshown = (
                f"{len(pending)} leads not shown with their newest imported event after "
                f"{timeout:g} s: scoring or the pipeline is behind (a re-run's horizon check "
                "reads the pipeline: let it catch up first)"
            )
            break
        if rounds % 10 == 0:
            progress(f"leadflow import: waiting for the pipeline to show {len(pending)} leads")
        rounds += 1
        await sleep(interval)
    summary.shown = touched - len(pending)
    return summary


def _count(summary: Summary, batch: Sequence[Imported], delivery: Delivery) -> None:
    rejected = {(r.event.lead_id, r.event.event_id) for r in delivery.rejected}
    summary.sent += len(batch)
    summary.rejected.extend(delivery.rejected)
    for item in batch:
        if (item.event.lead_id, item.event.event_id) not in rejected:
            summary.accepted += 1
            summary.leads.add(item.event.lead_id)

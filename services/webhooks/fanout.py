"""Records into messages: which endpoint gets which event, decided without I/O.

The store loads what the decision needs (the subscriptions, the leads' last
totals, what each endpoint was last sent) and writes what comes out, in one
transaction. A record seen again after a crash gives the same messages with the
same webhook ids, which the store then ignores as already there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from services.webhooks import payloads
from services.webhooks.filters import Filters, wants_score, wants_stage
from services.webhooks.payloads import EventType
from shared.events import ScoreUpdate, StageChange


@dataclass(frozen=True)
class Subscription:
    endpoint_id: str
    event_types: frozenset[str]
    filters: Filters


@dataclass(frozen=True)
class Outgoing:
    endpoint_id: str
    webhook_id: str
    event_type: EventType
    lead_id: str
    body: bytes


@dataclass
class LeadTotal:
    sequence: int
    total: float
    previous_total: float | None


@dataclass
class Fanout:
    """What one batch of records produces, and the state it leaves for the next."""

    totals: dict[str, LeadTotal]
    """By lead: loaded for the batch's leads, updated as the updates are read."""
    notices: dict[tuple[str, str], float]
    """(endpoint, lead) -> the last total sent; loaded, then updated."""
    messages: list[Outgoing] = field(default_factory=list)

    def stage_changes(
        self, subscriptions: Iterable[Subscription], changes: Iterable[StageChange]
    ) -> None:
        wanting = [s for s in subscriptions if EventType.STAGE_CHANGED in s.event_types]
        for change in changes:
            webhook_id, body = payloads.stage_changed(change)
            for sub in wanting:
                if wants_stage(sub.filters, change.to_stage):
                    self._add(sub, webhook_id, EventType.STAGE_CHANGED, change.lead_id, body)

    def score_updates(
        self, subscriptions: Iterable[Subscription], updates: Iterable[ScoreUpdate]
    ) -> None:
        subs = list(subscriptions)
        for update in sorted(updates, key=lambda u: (u.lead_id, u.sequence)):
            known = self.totals.get(update.lead_id)
            if known is not None and update.sequence < known.sequence:
                continue  # older than what was already read: it changed nothing
            if known is not None and update.sequence == known.sequence:
                previous = known.previous_total  # read again after a crash
            else:
                previous = None if known is None else known.total
                self.totals[update.lead_id] = LeadTotal(update.sequence, update.total, previous)
            self._score(subs, update, previous)

    def _score(self, subs: list[Subscription], update: ScoreUpdate, previous: float | None) -> None:
        if previous is None:
            created_id, created_body = payloads.created(update)
            for sub in subs:
                if EventType.CREATED in sub.event_types:
                    self._add(sub, created_id, EventType.CREATED, update.lead_id, created_body)
        webhook_id, body = payloads.score_changed(update, previous)
        for sub in subs:
            if EventType.SCORE_CHANGED not in sub.event_types:
                continue
            key = (sub.endpoint_id, update.lead_id)
            if wants_score(sub.filters, previous, update.total, self.notices.get(key)):
                self.notices[key] = update.total
                self._add(sub, webhook_id, EventType.SCORE_CHANGED, update.lead_id, body)

    def _add(
        self, sub: Subscription, webhook_id: str, kind: EventType, lead_id: str, body: bytes
    ) -> None:
        self.messages.append(Outgoing(sub.endpoint_id, webhook_id, kind, lead_id, body))

"""Records into messages: which endpoint gets which event, decided without I/O.

The store loads what the decision needs (the subscriptions, the leads' last
totals and the accounts' last sequences, what each endpoint was last sent) and
writes what comes out, in one transaction. A record seen again after a crash gives
the same messages with the same webhook ids, which the store then ignores as already
there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from services.webhooks import payloads
from services.webhooks.filters import Filters, wants_account_score, wants_score, wants_stage
from services.webhooks.payloads import EventType
from shared.account_events import AccountScore
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
    lead_id: str | None
    """None for an account's event: it names no lead (erasing one leaves it be)."""
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
    accounts: dict[str, int] = field(default_factory=dict)
    """By account: the sequence of its newest record read; loaded, then updated."""
    account_notices: dict[tuple[str, str], float] = field(default_factory=dict)
    """(endpoint, account) -> the last total sent; loaded, then updated."""
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

    def account_scores(
        self, subscriptions: Iterable[Subscription], scores: Iterable[AccountScore]
    ) -> None:
        """An account's record carries its previous total; a record at or below the
        account's newest sequence read is a redelivery whose messages exist already
        (and whose filter decision, made again against newer notices, could differ)."""
        wanting = [s for s in subscriptions if EventType.ACCOUNT_SCORE_CHANGED in s.event_types]
        for score in sorted(scores, key=lambda s: (s.account_id, s.sequence)):
            if score.sequence <= self.accounts.get(score.account_id, 0):
                continue
            self.accounts[score.account_id] = score.sequence
            if not wanting:
                continue
            webhook_id, body = payloads.account_score_changed(score)
            for sub in wanting:
                key = (sub.endpoint_id, score.account_id)
                last_sent = self.account_notices.get(key)
                if wants_account_score(sub.filters, score.previous_total, score.total, last_sent):
                    self.account_notices[key] = score.total
                    self._add(sub, webhook_id, EventType.ACCOUNT_SCORE_CHANGED, None, body)

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
        self,
        sub: Subscription,
        webhook_id: str,
        kind: EventType,
        lead_id: str | None,
        body: bytes,
    ) -> None:
        self.messages.append(Outgoing(sub.endpoint_id, webhook_id, kind, lead_id, body))

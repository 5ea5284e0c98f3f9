"""What a receiver gets: ``{type, timestamp, data}`` per Standard Webhooks, and its id.

A webhook id is derived from what the event is (a stage change's id, a lead's or an
account's score sequence), never drawn at random, so every retry and every replay of one
event carries the same ``webhook-id`` and a receiver can drop the duplicates.
``sequence`` is in every payload so a receiver can order the events of a lead (of an
account, for account events).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from shared.account_events import AccountScore
from shared.events import ScoreUpdate, StageChange, format_time

MAX_PAYLOAD_BYTES = 20 * 1024
"""Receivers (and their proxies) take small bodies; the breakdown is cut to fit."""


class EventType(StrEnum):
    STAGE_CHANGED = "lead.stage_changed"
    SCORE_CHANGED = "lead.score_changed"
    CREATED = "lead.created"
    ACCOUNT_SCORE_CHANGED = "account.score_changed"
    PING = "webhook.test"


SUBSCRIBABLE = (
    EventType.STAGE_CHANGED,
    EventType.SCORE_CHANGED,
    EventType.CREATED,
    EventType.ACCOUNT_SCORE_CHANGED,
)


def webhook_id(kind: EventType, key: str) -> str:
    """``msg_`` and a digest of what the event is: the same event, the same id."""
    digest = hashlib.sha256(f"{kind.value}\x00{key}".encode()).hexdigest()[:32]
    return f"msg_{digest}"


def envelope(kind: EventType, timestamp: datetime, data: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": kind.value, "timestamp": format_time(timestamp), "data": data})


def stage_changed(change: StageChange) -> tuple[str, bytes]:
    """The id and body of a ``lead.stage_changed`` webhook."""
    data = {
        "change_id": change.change_id,
        "lead_id": change.lead_id,
        "sequence": change.sequence,
        "from_stage": change.from_stage.value if change.from_stage else None,
        "to_stage": change.to_stage.value,
        "reason": change.reason,
        "trigger_event_id": change.trigger_event_id,
        "occurred_at": format_time(change.occurred_at),
        "score": change.score.model_dump(),
        "model_version": change.model_version,
    }
    body = envelope(EventType.STAGE_CHANGED, change.occurred_at, data)
    return webhook_id(EventType.STAGE_CHANGED, change.change_id), body


def score_changed(update: ScoreUpdate, previous_total: float | None) -> tuple[str, bytes]:
    """The id and body of a ``lead.score_changed`` webhook: the score and what moved it."""
    data: dict[str, Any] = {
        "lead_id": update.lead_id,
        "sequence": update.sequence,
        "fit": update.fit,
        "engagement": update.engagement,
        "total": update.total,
        "previous_total": previous_total,
        "delta": None if previous_total is None else update.total - previous_total,
        "stage": update.stage.value,
        "as_of": format_time(update.as_of),
        "trigger_event_id": update.trigger_event_id,
        "model_version": update.model_version,
        "breakdown": [rule.model_dump() for rule in update.breakdown],
        "breakdown_truncated": False,
    }
    key = f"{update.lead_id}\x00{update.sequence}"
    body = envelope(EventType.SCORE_CHANGED, update.as_of, data)
    while len(body) > MAX_PAYLOAD_BYTES and data["breakdown"]:
        # the biggest contributions are the ones a CRM shows; the tail goes first
        data["breakdown"] = sorted(data["breakdown"], key=lambda r: -abs(r["points"]))
        data["breakdown"] = data["breakdown"][: len(data["breakdown"]) // 2]
        data["breakdown_truncated"] = True
        body = envelope(EventType.SCORE_CHANGED, update.as_of, data)
    return webhook_id(EventType.SCORE_CHANGED, key), body


def created(update: ScoreUpdate) -> tuple[str, bytes]:
    """The id and body of ``lead.created``: the first score leadflow saw of a lead."""
    data = {
        "lead_id": update.lead_id,
        "sequence": update.sequence,
        "stage": update.stage.value,
        "fit": update.fit,
        "engagement": update.engagement,
        "total": update.total,
        "as_of": format_time(update.as_of),
        "trigger_event_id": update.trigger_event_id,
        "model_version": update.model_version,
    }
    body = envelope(EventType.CREATED, update.as_of, data)
    return webhook_id(EventType.CREATED, update.lead_id), body


def account_score_changed(score: AccountScore) -> tuple[str, bytes]:
    """The id and body of an ``account.score_changed`` webhook: the roll-up's figures.

    The contacts are counted, not listed: an account's webhook names no lead, so erasing a
    lead leaves nothing of it in the messages of its account (``GET /v1/accounts/{id}``
    on the pipeline lists them). Traits come from group calls and can be large: the
    biggest go first when the body would pass the limit, then the tail of the breakdown.
    """
    data: dict[str, Any] = {
        "account_id": score.account_id,
        "sequence": score.sequence,
        "total": score.total,
        "previous_total": score.previous_total,
        "delta": None if score.previous_total is None else score.total - score.previous_total,
        "fit": score.fit,
        "contacts": score.contacts,
        "engaged_contacts": score.engaged_contacts,
        "contact_total_sum": score.contact_total_sum,
        "contact_total_max": score.contact_total_max,
        "as_of": format_time(score.as_of),
        "model_version": score.model_version,
        "breakdown": [rule.model_dump() for rule in score.breakdown],
        "breakdown_truncated": False,
        "traits": dict(score.traits),
        "traits_truncated": False,
    }
    body = envelope(EventType.ACCOUNT_SCORE_CHANGED, score.as_of, data)
    while len(body) > MAX_PAYLOAD_BYTES and (data["traits"] or data["breakdown"]):
        if data["traits"]:
            data["traits"] = _without_biggest(data["traits"], len(body) - MAX_PAYLOAD_BYTES)
            data["traits_truncated"] = True
        else:
            data["breakdown"] = sorted(data["breakdown"], key=lambda r: -abs(r["points"]))
            data["breakdown"] = data["breakdown"][: len(data["breakdown"]) // 2]
            data["breakdown_truncated"] = True
        body = envelope(EventType.ACCOUNT_SCORE_CHANGED, score.as_of, data)
    key = f"{score.account_id}\x00{score.sequence}"
    return webhook_id(EventType.ACCOUNT_SCORE_CHANGED, key), body


def _without_biggest(traits: dict[str, Any], excess: int) -> dict[str, Any]:
    """``traits`` less the biggest ones, at least ``excess`` bytes of them (or all)."""
    sizes = {name: len(orjson.dumps({name: value})) for name, value in traits.items()}
    dropped = 0
    kept = dict(traits)
    for name in sorted(sizes, key=lambda name: (-sizes[name], name)):
        if dropped >= excess:
            break
        del kept[name]
        dropped += sizes[name]
    return kept


def ping(now: datetime, nonce: str) -> tuple[str, bytes]:
    """A test webhook: a fresh id each time, so a receiver's de-duplication does not eat it."""
    body = envelope(EventType.PING, now, {"message": "a test webhook from leadflow"})
    return webhook_id(EventType.PING, nonce), body

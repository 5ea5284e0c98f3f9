"""The changelog's records (docs/architecture.md §5.3): a lead's state, and the marker of
the last input offset applied, to and from bytes. The one home of their layout.

Format 3 (written today) keys per-rule engagement and cap counters by the rule's id.
Formats 1 and 2 (earlier versions) keyed them by the rule's position in the model; such a
record is read by position through the model that restores it (``legacy_ids``), which is
right as long as that model lists its engagement rules in the order the record was
written under, and the worker then writes the lead again in format 3 in its partition's
next transaction, so the mapping happens once (the README's "Upgrades").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import orjson

from services.scoring.engagement import Decayed, Engagement, RuleEngagement
from services.scoring.lead import EPOCH, LeadState, Trait, micros
from shared.events import Stage

STATE_FORMAT = 3
"""The layout written. Formats 1 (times as RFC 3339 text, rules keyed by their index as
text) and 2 (times as integers, rules as ``[index, ...]`` rows) are still read."""

APPLIED_OFFSET_KEY = b"\x00applied-offset"
"""No lead_id can be this key: identifiers refuse control characters."""

LIVE_MODEL_KEY = b"\x00live-model"
"""The marker of the model version a partition scores under since its last model switch
(absent: the workers' model file); written by the switch's transaction only."""


def lead_record(state: LeadState) -> bytes:
    """The changelog value of a lead: written for every lead of every batch that touched
    it, so orjson formats ``as_of`` itself (as :func:`~shared.events.format_time` would:
    every time held here is in UTC) and the other times are integers already. Caps and
    engagement rules keep the order they were first counted in (a replay counts them in the
    same order, a restore keeps it): sorting them cost more than the rest."""
    return orjson.dumps(_layout(state), option=orjson.OPT_UTC_Z)


def lead_dict(state: LeadState) -> dict[str, Any]:
    """:func:`lead_record` decoded: plain JSON types only."""
    data: dict[str, Any] = orjson.loads(lead_record(state))
    return data


def _layout(state: LeadState) -> dict[str, Any]:
    engagement = state.engagement
    recycle = None
    if engagement.recycled_at is not None:
        since = engagement.since_recycle
        recycle = {"at": engagement.recycled_at, "since": (since.value, since.as_of)}
    return {
        "format": STATE_FORMAT,
        "lead_id": state.lead_id,
        "stage": state.stage,
        "as_of": state.as_of,
        "traits": {n: (t.value, t.set_at_us) for n, t in state.traits.items()},
        "engagement": {
            "total": (engagement.total.value, engagement.total.as_of),
            "rules": [
                (rule_id, r.decayed.value, r.decayed.as_of, r.count)
                for rule_id, r in engagement.rules.items()
            ],
            "recycle": recycle,
        },
        "intent_event": state.intent_event,
        "caps": [(rule, day, n) for (rule, day), n in state.caps.items()],
        "seen": state.seen,
        "score_sequence": state.score_sequence,
        "change_sequence": state.change_sequence,
        **_history(state),
    }


def _history(state: LeadState) -> dict[str, Any]:
    """An anonymous lead's history (absent for the others): its events as they were read,
    embedded as they are."""
    if state.history is None:
        return {}
    events = [orjson.Fragment(raw) for raw in state.history]
    return {"history": {"events": events, "lost": state.history_lost}}


def is_legacy(data: Mapping[str, Any]) -> bool:
    """Whether a decoded record keys its rules by position (formats 1 and 2)."""
    return data.get("format") in (1, 2)


def read_lead(data: Mapping[str, Any], legacy_ids: Sequence[str] = ()) -> LeadState:
    """A lead's state from its decoded record, in any format still read.

    ``legacy_ids`` are the restoring model's engagement rule ids by position: what a rule
    index of format 1 or 2 stands for. An index past its end becomes ``rule-<index>``,
    shown as a rule no longer in the model. Raises ``ValueError`` on an unknown layout.
    """
    layout = data.get("format")
    rule_of: Callable[[Any], str]
    if layout == STATE_FORMAT:
        time_of: Callable[[Any], int] = int
        day_of: Callable[[Any], int] = int
        rule_of = str
    elif layout in (1, 2):
        if layout == 2:
            time_of = day_of = int
        else:  # times as RFC 3339 strings, days as ISO dates
            time_of, day_of = _micros_of_text, _day_of_text

        def rule_of(index: Any) -> str:
            position = int(index)
            return legacy_ids[position] if position < len(legacy_ids) else f"rule-{position}"

    else:
        raise ValueError(f"unknown lead state format {layout!r}")
    history = data.get("history")
    return LeadState(
        lead_id=data["lead_id"],
        stage=None if data["stage"] is None else Stage(data["stage"]),
        as_of=None if data["as_of"] is None else _time(data["as_of"]),
        traits={n: Trait(value, time_of(at)) for n, (value, at) in data["traits"].items()},
        engagement=_engagement(data["engagement"], rule_of),
        intent_event=data["intent_event"],
        caps={(rule_of(r), day_of(day)): int(n) for r, day, n in data["caps"]},
        seen={event_id: time_of(at) for event_id, at in data["seen"].items()},
        score_sequence=int(data["score_sequence"]),
        change_sequence=int(data["change_sequence"]),
        history=None if history is None else [orjson.dumps(e) for e in history["events"]],
        history_lost=0 if history is None else int(history["lost"]),
    )


def _engagement(data: Mapping[str, Any], rule_of: Callable[[Any], str]) -> Engagement:
    value, as_of = data["total"]
    rules = data["rules"]
    if isinstance(rules, Mapping):  # format 1: {"<index>": [value, as_of, count]}
        rules = [(index, *row) for index, row in rules.items()]
    recycle = data.get("recycle")
    recycled_at, since = None, Decayed()
    if recycle is not None:
        recycled_at = float(recycle["at"])
        since = _decayed(*recycle["since"])
    return Engagement(
        total=_decayed(value, as_of),
        rules={
            rule_of(rule): RuleEngagement(Decayed(float(v), float(at)), int(count))
            for rule, v, at, count in rules
        },
        recycled_at=recycled_at,
        since_recycle=since,
    )


def _decayed(value: Any, as_of: Any) -> Decayed:
    return Decayed(float(value), None if as_of is None else float(as_of))


def live_model_record(version: str, switch_offset: int) -> bytes:
    return orjson.dumps({"version": version, "switch_offset": switch_offset})


def read_live_model(value: bytes) -> str:
    return str(orjson.loads(value)["version"])


def applied_offset_record(offset: int) -> bytes:
    return orjson.dumps({"offset": offset})


def read_applied_offset(value: bytes) -> int:
    return int(orjson.loads(value)["offset"])


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _micros_of_text(text: str) -> int:
    return micros(_time(text))


def _day_of_text(text: str) -> int:
    return (date.fromisoformat(text) - EPOCH.date()).days

"""Identity merges: an anonymous visitor's profile folded into the known lead, once.

Pure, no I/O (docs/architecture.md §5.12). The two ids live on different partitions, so a
merge is two steps, each inside its own partition's transaction:

1. the ``identity.merge`` request, keyed by the anonymous id, reaches the partition that
   owns the anonymous state. That partition retires the state (a changelog tombstone),
   keeps an alias marker (the anonymous id now means the known lead) and writes a
   :class:`Merge` record keyed by the known lead to ``leadflow.events``. The record
   carries the anonymous lead's applied events as they were read (its ``history``), and
   the de-duplication set goes with them, since their ids are the events' own. Later
   events of the anonymous id are forwarded to the known lead the same way.
2. the known lead's partition folds the record in (:func:`fold_merge`): every carried
   event is applied to the known lead with the same :func:`apply_event` as any event, in
   the order the anonymous lead applied them, so engagement keeps its event times (decay
   stays exact), caps count both ids' events, and traits follow the one trait rule. The
   merge id is remembered, so a record met twice counts once, and the fold gives one
   score update and at most one stage change (from the stage before to the stage after),
   whatever the carried events did one by one.

Carrying events, not a computed state, is what keeps a merged lead a function of the
events under whichever model folds them: a model switch or a rescore that replays the
known lead's partition folds the same record under the new model.

Traits: the known lead's values win on conflict. A carried event's traits only fill the
names the known lead does not have yet, whatever their times; after the merge the usual
rule (latest event time wins) holds for both ids' new events.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import orjson
from pydantic import ValidationError

from services.scoring.lead import LeadState
from services.scoring.model import ScoringModel
from services.scoring.scoring import (
    DomainError,
    NewScore,
    change_id,
    current_score,
)
from services.scoring.scoring import (
    apply_event as apply_one,
)
from shared.events import ANONYMOUS_PREFIX, Event, Score, StageChange

MERGE_KIND = "identity.merged"
MERGE_PREFIX = b'{"kind":"identity.merged"'
"""How a merge record's value starts (orjson keeps the order written): told apart from an
event before any decoding."""

ALIAS_PREFIX = b"\x00alias\x00"
"""Changelog key prefix of an alias marker: no lead id holds a control character."""

FORWARDED_FROM_HEADER = "leadflow-forwarded-from"
"""Header of an event forwarded to the known lead: the anonymous id it was sent for."""

MAX_HISTORY_BYTES = 512 * 1024
"""Bound on an anonymous lead's history, so its changelog record and its merge record
stay within Kafka's default 1 MB message size. Past it the oldest events are dropped and
counted (:attr:`LeadState.history_lost`)."""

MERGE_HORIZON = timedelta.max
"""Carried events are never too old to apply: the merge id de-duplicates the whole merge,
and each event's id de-duplicates it against the known lead's own."""


def is_anonymous(lead_id: str) -> bool:
    return lead_id.startswith(ANONYMOUS_PREFIX)


def keep_history(state: LeadState, raw: bytes) -> None:
    """Append an applied event of an anonymous lead to its history, within the bound."""
    if state.history is None:
        state.history = []
        state.history_lost = max(0, state.score_sequence - 1)  # applied before any history
    history = state.history
    history.append(raw)
    size = sum(len(item) for item in history)
    dropped = 0
    while size > MAX_HISTORY_BYTES and len(history) > 1:
        size -= len(history[dropped])
        dropped += 1
    if dropped:
        del history[:dropped]
        state.history_lost += dropped


@dataclass(frozen=True, slots=True)
class Merge:
    """The record keyed by the known lead that moves an anonymous profile into it."""

    merge_id: str
    """The ``identity.merge`` request's event id."""
    lead_id: str
    """The known lead."""
    merged_from: str
    at: datetime
    """The request's event time (the identify or alias call)."""
    events: tuple[bytes, ...] = ()
    """The anonymous lead's applied events as read, in the order applied."""
    lost: int = 0
    """Applied events of the anonymous lead not carried (see :data:`MAX_HISTORY_BYTES`)."""
    source: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "kind": MERGE_KIND,
                "merge_id": self.merge_id,
                "lead_id": self.lead_id,
                "merged_from": self.merged_from,
                "at": self.at,
                "source": self.source,
                "lost": self.lost,
                "events": [orjson.Fragment(raw) for raw in self.events],
            },
            option=orjson.OPT_UTC_Z,
        )

    @classmethod
    def read(cls, value: bytes) -> Merge:
        """Raises ``ValueError`` on a value that is not a merge record."""
        data = orjson.loads(value)
        if not isinstance(data, dict) or data.get("kind") != MERGE_KIND:
            raise ValueError("not an identity merge record")
        try:
            return cls(
                merge_id=str(data["merge_id"]),
                lead_id=str(data["lead_id"]),
                merged_from=str(data["merged_from"]),
                at=datetime.fromisoformat(data["at"]),
                events=tuple(orjson.dumps(item) for item in data["events"]),
                lost=int(data["lost"]),
                source=None if data.get("source") is None else str(data["source"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an identity merge record: {exc!r}") from None


def merge_of(request: Event, into: str, state: LeadState | None) -> Merge:
    """The record an ``identity.merge`` request sends to ``into``, from the anonymous
    lead's state (``None``: the visitor has no state, nothing is carried)."""
    return Merge(
        merge_id=request.event_id,
        lead_id=into,
        merged_from=request.lead_id,
        at=request.occurred_at,
        events=tuple(state.history or ()) if state is not None else (),
        lost=state.history_lost if state is not None else 0,
        source=request.source,
    )


def alias_key(anonymous_id: str) -> bytes:
    return ALIAS_PREFIX + anonymous_id.encode()


def alias_of_key(key: bytes) -> str:
    return key[len(ALIAS_PREFIX) :].decode()


def alias_record(into: str, merge_id: str) -> bytes:
    return orjson.dumps({"into": into, "merge_id": merge_id})


def read_alias(value: bytes) -> str:
    return str(orjson.loads(value)["into"])


@dataclass(frozen=True, slots=True)
class Follow:
    """A later event of an anonymous id, forwarded to the lead it was merged into."""

    event: Event
    """The event as the known lead's: its ``lead_id`` is the known lead's."""
    merged_from: str


@dataclass
class MergeOutcome:
    """What folding one merge record gave; ``score`` is ``None`` when nothing changed (a
    merge met again, or one whose events were all duplicates or none at all)."""

    state: LeadState | None
    score: NewScore | None = None
    stage_change: StageChange | None = None
    duplicate: bool = False
    applied: list[Event] = field(default_factory=list)
    """The carried events applied, as the known lead's (what accounts read of them)."""
    skipped: int = 0
    """Carried events not applied: duplicates of the known lead's own, or inapplicable."""


def fold_merge(state: LeadState | None, merge: Merge, model: ScoringModel) -> MergeOutcome:
    """Fold ``merge`` into the known lead's ``state``, in place (see the module)."""
    if state is not None and merge.merge_id in state.seen:
        return MergeOutcome(state, duplicate=True)
    lead = state
    before_stage = None if state is None else state.stage
    before_scores = 0 if state is None else state.score_sequence
    before_changes = 0 if state is None else state.change_sequence
    outcome = MergeOutcome(state)
    known_traits = frozenset(() if state is None else state.traits)
    why = None
    for event in carried_events(merge):
        if known_traits:
            event = _known_traits_win(known_traits, event)
        try:
            applied = apply_one(lead, event, model, MERGE_HORIZON, in_place=True)
        except (DomainError, ValueError, TypeError):
            outcome.skipped += 1
            continue
        if applied.skipped is not None:
            outcome.skipped += 1
            continue
        lead = applied.state
        outcome.applied.append(event)
        if applied.stage_change is not None:
            why = applied.stage_change.reason
    if lead is None or not outcome.applied:
        return outcome  # nothing carried changed the lead: no update to send
    lead.remember(merge.merge_id, merge.at)
    lead.score_sequence = before_scores + 1
    lead.change_sequence = before_changes
    score = replace(current_score(lead, model, merge.merge_id), merged_from=merge.merged_from)
    outcome.state, outcome.score = lead, score
    if lead.stage != before_stage:
        lead.change_sequence += 1
        assert lead.stage is not None  # a scored lead has a stage
        outcome.stage_change = StageChange(
            change_id=change_id(lead.lead_id, lead.change_sequence),
            lead_id=lead.lead_id,
            sequence=lead.change_sequence,
            from_stage=before_stage,
            to_stage=lead.stage,
            reason=f"identity merge of {merge.merged_from}: {why or 'its events'}",
            trigger_event_id=merge.merge_id,
            occurred_at=merge.at,
            score=Score(fit=score.fit, engagement=score.engagement, total=score.total),
            model_version=model.version,
            source=merge.source,
        )
    return outcome


def carried_events(merge: Merge) -> list[Event]:
    """The merge's events as the known lead's (``lead_id`` replaced); an entry that is no
    event any more (it was one when applied) is left out."""
    events = []
    for raw in merge.events:
        try:
            event = Event.model_validate_json(raw)
        except ValidationError:
            continue
        events.append(event.model_copy(update={"lead_id": merge.lead_id}))
    return events


def _known_traits_win(known: frozenset[str], event: Event) -> Event:
    """``event`` without the traits the known lead had before the merge: its values win."""
    if not event.traits or known.isdisjoint(event.traits):
        return event
    kept = {name: value for name, value in event.traits.items() if name not in known}
    return event.model_copy(update={"traits": kept})

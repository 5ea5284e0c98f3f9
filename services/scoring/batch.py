"""Scoring a batch of input records of one partition: pure, no I/O, no clock.

The worker and any other run over ``leadflow.events`` (a replay with another model) score
records through this one piece: it decodes each record, applies it to its lead's state
(:func:`~services.scoring.scoring.apply_event`) and says what came of it: score updates
and stage changes, the records refused (typed, with the reason a dead letter carries),
the erasures, and the leads whose state changed. Writing any of it is the caller's job.

States change in place, as the worker wants (a copy per event would cost more than the
scoring): a caller that cannot commit what a batch produced must throw ``known`` away.

Identity merges (:mod:`services.scoring.identity`) go through here too: an
``identity.merge`` request retires its anonymous lead and says what to send the known lead
(``outgoing``), a later event of a merged id is forwarded the same way, and a merge
record is folded into its known lead.

An erase record (``lead.erased``) drops its lead's state, and the lead's outputs scored
earlier in the batch (written after the erasure's tombstones they would bring it back);
what the batch scores for that id afterwards is a new lead. Refused records stay: dead
letters are not kept by key.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import ValidationError

from services.scoring.identity import (
    MERGE_PREFIX,
    Follow,
    Merge,
    fold_merge,
    is_anonymous,
    keep_history,
    merge_of,
)
from services.scoring.lead import DEFAULT_HORIZON, LeadState, SkipKind
from services.scoring.model import ScoringModel
from services.scoring.scoring import DomainError, NewScore, apply_event
from shared.events import IDENTITY_MERGE, LEAD_ERASED, Event, StageChange, merge_target
from shared.kafka import ConsumedRecord, encode_key


class Refusal(enum.Enum):
    """Why a record was not scored and goes to dead letters."""

    INVALID = "invalid"
    """Not an event: not JSON, wrong types, too large."""
    INAPPLICABLE = "inapplicable"
    """An event its lead cannot take (e.g. a ``stage.set`` to an unknown stage)."""
    TOO_OLD = "too_old"
    """Older than the de-duplication horizon behind its lead's latest event."""


@dataclass(frozen=True, slots=True)
class Refused:
    record: ConsumedRecord
    refusal: Refusal
    reason: str


@dataclass(frozen=True, slots=True)
class Scored:
    """One applied event's outputs: always a score update, a stage change if it moved."""

    lead_id: str
    key: bytes
    score: NewScore
    stage_change: StageChange | None


@dataclass
class BatchResult:
    scored: list[Scored] = field(default_factory=list)
    """In input order; without the records of leads erased later in the batch."""
    refused: list[Refused] = field(default_factory=list)
    erased: list[Event] = field(default_factory=list)
    """The erase records, in order."""
    leads: dict[str, LeadState] = field(default_factory=dict)
    """The states to write: every lead the batch changed (and those asked to be rewritten)."""
    applied_offset: int = -1
    """The last input offset the batch took into account."""
    group_calls: list[Event] = field(default_factory=list)
    """Applied events of the model's group event types, in order, without those of leads
    erased later in the batch: what the lead's account membership reads of the batch
    (:mod:`services.scoring.account_contributions`)."""
    outgoing: list[Merge | Follow] = field(default_factory=list)
    """Records for other leads' partitions, in order: merge records and forwarded events."""
    retired: list[Event] = field(default_factory=list)
    """The merge requests applied: their anonymous leads' states are gone (tombstones)."""
    aliases: dict[str, tuple[str, str]] = field(default_factory=dict)
    """New alias markers: anonymous id -> (known lead, merge id)."""
    unaliased: list[str] = field(default_factory=list)
    """Alias markers dropped (the anonymous id was erased)."""
    duplicates: int = 0
    replayed: int = 0
    """Records at or below the offset already scored, ignored."""


class BatchScoring:
    """One batch being scored record by record (the worker yields to its event loop between
    records); :meth:`finish` folds the new states into ``known`` and returns the result."""

    def __init__(
        self,
        model: ScoringModel,
        known: dict[str, LeadState],
        *,
        applied_offset: int = -1,
        horizon: timedelta = DEFAULT_HORIZON,
        rewrite: Iterable[str] = (),
        aliases: dict[str, str] | None = None,
    ) -> None:
        self.model = model
        self.known = known
        self.aliases = {} if aliases is None else aliases
        """The partition's alias markers (anonymous id -> known lead), changed in place."""
        self.horizon = horizon
        self.result = BatchResult(applied_offset=applied_offset)
        self._rewrite = tuple(rewrite)
        self._group_events = frozenset(model.accounts.membership.group_events)

    def add(self, record: ConsumedRecord) -> None:
        result = self.result
        if record.offset <= result.applied_offset:
            result.replayed += 1
            return
        result.applied_offset = record.offset
        try:
            if record.value is None:
                raise ValueError("a record without a value is not an event")
            if record.value.startswith(MERGE_PREFIX):
                self._fold(record, Merge.read(record.value))
                return
            event = Event.model_validate_json(record.value)
        except (ValidationError, ValueError, TypeError) as exc:
            self._refuse(record, Refusal.INVALID, exc)
            return
        if event.type == LEAD_ERASED:
            self._erase(event)
            return
        lead_id = event.lead_id
        if lead_id in self.aliases or event.type == IDENTITY_MERGE:
            self._identity(record, event)
            return
        state = result.leads.get(lead_id) or self.known.get(lead_id)
        try:
            outcome = apply_event(state, event, self.model, self.horizon, in_place=True)
        except (DomainError, ValueError, TypeError) as exc:
            self._refuse(record, Refusal.INAPPLICABLE, exc)
            return
        if outcome.skipped is not None:
            if outcome.skipped.kind is SkipKind.DUPLICATE:
                result.duplicates += 1
            else:  # too old to de-duplicate: not scored, but never dropped silently
                result.refused.append(Refused(record, Refusal.TOO_OLD, outcome.skipped.reason))
            return
        assert outcome.score is not None  # applied: always scored
        result.leads[lead_id] = outcome.state
        if is_anonymous(lead_id) and record.value is not None:
            keep_history(outcome.state, record.value)
        result.scored.append(
            Scored(lead_id, encode_key(lead_id), outcome.score, outcome.stage_change)
        )
        if event.type in self._group_events:
            result.group_calls.append(event)

    def finish(self) -> BatchResult:
        result = self.result
        for lead_id in self._rewrite:
            state = self.known.get(lead_id)
            if state is not None and lead_id not in result.leads:
                result.leads[lead_id] = state
        self.known.update(result.leads)
        return result

    def _identity(self, record: ConsumedRecord, event: Event) -> None:
        """A merge request, or any event of an id merged already (forwarded)."""
        result, lead_id = self.result, event.lead_id
        into = self.aliases.get(lead_id)
        if event.type == IDENTITY_MERGE:
            asked = merge_target(event.type, lead_id, event.properties)
            assert asked is not None  # validated with the event
            if into == asked:
                result.duplicates += 1  # identified again: one merge
            elif into is not None:
                why = f"{lead_id!r} was merged into {into!r} already, not into {asked!r}"
                result.refused.append(Refused(record, Refusal.INAPPLICABLE, why))
            else:
                self._retire(event, asked)
            return
        assert into is not None
        result.outgoing.append(Follow(event.model_copy(update={"lead_id": into}), lead_id))

    def _retire(self, request: Event, into: str) -> None:
        result, lead_id = self.result, request.lead_id
        state = result.leads.pop(lead_id, None) or self.known.get(lead_id)
        self.known.pop(lead_id, None)
        self._rewrite = tuple(r for r in self._rewrite if r != lead_id)
        result.outgoing.append(merge_of(request, into, state))
        result.retired.append(request)
        self.aliases[lead_id] = into
        result.aliases[lead_id] = (into, request.event_id)

    def _fold(self, record: ConsumedRecord, merge: Merge) -> None:
        result, lead_id = self.result, merge.lead_id
        state = result.leads.get(lead_id) or self.known.get(lead_id)
        outcome = fold_merge(state, merge, self.model)
        if outcome.duplicate:
            result.duplicates += 1
        if outcome.score is None or outcome.state is None:
            return
        result.leads[lead_id] = outcome.state
        result.scored.append(
            Scored(lead_id, encode_key(lead_id), outcome.score, outcome.stage_change)
        )
        result.group_calls.extend(e for e in outcome.applied if e.type in self._group_events)

    def _refuse(self, record: ConsumedRecord, refusal: Refusal, exc: Exception) -> None:
        self.result.refused.append(Refused(record, refusal, f"{type(exc).__name__}: {exc}"))

    def _erase(self, event: Event) -> None:
        lead_id, result = event.lead_id, self.result
        self.known.pop(lead_id, None)  # its de-duplication memory goes with it
        result.leads.pop(lead_id, None)
        if any(s.lead_id == lead_id for s in result.scored):
            result.scored = [s for s in result.scored if s.lead_id != lead_id]
        if any(e.lead_id == lead_id for e in result.group_calls):
            result.group_calls = [e for e in result.group_calls if e.lead_id != lead_id]
        self._rewrite = tuple(r for r in self._rewrite if r != lead_id)
        if self.aliases.pop(lead_id, None) is not None:  # erased: the id means nobody now
            result.aliases.pop(lead_id, None)
            result.unaliased.append(lead_id)
        result.erased.append(event)


def score_batch(
    records: Iterable[ConsumedRecord],
    known: dict[str, LeadState],
    model: ScoringModel,
    *,
    applied_offset: int = -1,
    horizon: timedelta = DEFAULT_HORIZON,
    aliases: dict[str, str] | None = None,
) -> BatchResult:
    """Score ``records`` (of one partition, in offset order) on top of ``known``, in place."""
    scoring = BatchScoring(
        model, known, applied_offset=applied_offset, horizon=horizon, aliases=aliases
    )
    for record in records:
        scoring.add(record)
    return scoring.finish()

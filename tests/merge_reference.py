"""The reference for merged leads: the pure model folded over both ids' events.

:mod:`tests.reference` folds each lead's own events. A lead that an identity merge fed
(docs/architecture.md §5.12) also takes, at the point where the merge record sits in its
partition, the anonymous visitor's applied events under its own id: never too old, its
own traits winning on conflict, and counted as one step (one score update, at most one
stage change from the stage before to the stage after). The events of the visitor that
followed the merge are forwarded and count as the known lead's own. What the fault and
rescore tests give it is the order the known lead's partition holds, read back from the
topic; the carried events come from what the test itself sent for the visitor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from services.scoring.identity import MERGE_HORIZON
from services.scoring.lead import LeadState
from services.scoring.model import ScoringModel
from services.scoring.scoring import apply_event
from shared.events import Event, ScoreUpdate


@dataclass(frozen=True, slots=True)
class MergeStep:
    """The merge record of ``merge_id``, carrying ``events`` (the visitor's, as sent)."""

    merge_id: str
    events: Sequence[Event]


@dataclass
class MergedExpected:
    """One merged lead as the reference ends it."""

    lead_id: str
    state: LeadState | None = None
    last: ScoreUpdate | None = None
    """The score update of the last step, when it was an event (not a merge)."""
    triggers: list[str] = field(default_factory=list)
    """The trigger of each score update, in order: event ids and merge ids, each once."""
    changes: list[tuple[int, str | None, str, str]] = field(default_factory=list)
    """Each stage change: (sequence, from, to, trigger)."""


def applied_events(events: Iterable[Event], model: ScoringModel) -> list[Event]:
    """What a lead applied of ``events`` (duplicates and inapplicable ones left out)."""
    state: LeadState | None = None
    applied = []
    for event in events:
        outcome = apply_event(state, event, model)
        if outcome.skipped is None:
            state = outcome.state
            applied.append(event)
    return applied


def fold_partition(
    lead_id: str, steps: Iterable[Event | MergeStep], model: ScoringModel
) -> MergedExpected:
    """Fold the known lead's records in partition order (see the module)."""
    expected = MergedExpected(lead_id)
    for step in steps:
        if isinstance(step, MergeStep):
            _merge(expected, step, model)
            continue
        outcome = apply_event(expected.state, step.model_copy(update={"lead_id": lead_id}), model)
        if outcome.skipped is not None:
            continue
        expected.state, expected.last = outcome.state, outcome.score_update
        expected.triggers.append(step.event_id)
        if outcome.stage_change is not None:
            change = outcome.stage_change
            expected.changes.append(
                (change.sequence, change.from_stage, change.to_stage, step.event_id)
            )
    return expected


def _merge(expected: MergedExpected, step: MergeStep, model: ScoringModel) -> None:
    state = expected.state
    before = None if state is None else state.stage
    owned = frozenset(() if state is None else state.traits)
    moved = False
    for event in applied_events(step.events, model):
        traits = {name: value for name, value in event.traits.items() if name not in owned}
        carried = event.model_copy(update={"lead_id": expected.lead_id, "traits": traits})
        outcome = apply_event(state, carried, model, MERGE_HORIZON)
        if outcome.skipped is None:
            state, moved = outcome.state, True
    if not moved or state is None:
        return
    state.score_sequence = len(expected.triggers) + 1  # the merge is one step
    state.change_sequence = len(expected.changes)
    if state.stage != before:
        assert state.stage is not None
        state.change_sequence += 1
        expected.changes.append((state.change_sequence, before, state.stage, step.merge_id))
    expected.state, expected.last = state, None
    expected.triggers.append(step.merge_id)

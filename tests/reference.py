"""The reference every fault test compares with: the pure model over the accepted events.

Whatever crashed or restarted, the scores and stage changes the system ends
with must equal what :func:`services.scoring.scoring.apply_event` gives when
folded over each lead's acknowledged events in the order they were posted. It folds the
very function the worker's batches apply, so it follows every rule of the domain as
built: rule ids, caps, recycling (a backward ``stage.set`` resets what qualifies a lead),
and skips (a duplicate or an event beyond the horizon counts for nothing).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.scoring.lead import LeadState
from services.scoring.model import ScoringModel, load_model
from services.scoring.scoring import apply_event
from shared.events import Event, ScoreUpdate, StageChange


@dataclass
class Expected:
    """One lead's final score, every stage change it went through, the events it counted."""

    score: ScoreUpdate
    changes: list[StageChange] = field(default_factory=list)
    counted: set[str] = field(default_factory=set)


def reference(
    events: Iterable[Event | Mapping[str, Any]], model: ScoringModel | None = None
) -> dict[str, Expected]:
    model = model or load_model()
    states: dict[str, LeadState | None] = defaultdict(lambda: None)
    expected: dict[str, Expected] = {}
    for item in events:
        event = item if isinstance(item, Event) else Event.model_validate(item)
        outcome = apply_event(states[event.lead_id], event, model)
        if outcome.skipped is not None or outcome.score_update is None:
            continue
        states[event.lead_id] = outcome.state
        lead = expected.setdefault(event.lead_id, Expected(outcome.score_update))
        lead.score = outcome.score_update
        lead.counted.add(event.event_id)
        if outcome.stage_change is not None:
            lead.changes.append(outcome.stage_change)
    return expected


def score_mismatches(
    expected: Mapping[str, Expected],
    leads: Mapping[str, Mapping[str, Any]],
    tolerance: float = 1e-6,
) -> list[str]:
    """Leads whose served stage or score differs from the reference (empty: all equal)."""
    problems = [f"{lead}: missing" for lead in expected if lead not in leads]
    problems += [f"{lead}: not in the reference" for lead in leads if lead not in expected]
    for lead_id, want in expected.items():
        got = leads.get(lead_id)
        if got is None:
            continue
        score = want.score
        if got["stage"] != score.stage.value:
            problems.append(f"{lead_id}: stage {got['stage']} != {score.stage.value}")
        wanted = {"fit": score.fit, **valued(score, got.get("valued_at"))}
        for axis, value in wanted.items():
            if abs(got[axis] - value) > tolerance:
                problems.append(f"{lead_id}: {axis} {got[axis]} != {value}")
    return problems


def valued(score: ScoreUpdate, valued_at: str | None) -> dict[str, float]:
    """The reference's engagement and total at the moment the API valued the lead at: the
    engagement decays from the score's time with the model's half-life."""
    engagement = score.engagement
    if valued_at is not None and score.half_life_seconds is not None:
        elapsed = (datetime.fromisoformat(valued_at) - score.as_of).total_seconds()
        engagement *= 2 ** (-max(0.0, elapsed) / score.half_life_seconds)
    return {"engagement": engagement, "total": score.fit + engagement}


def change_sequence_problems(changes: Sequence[StageChange]) -> list[str]:
    """Per lead, sequences must run 1, 2, 3... with no gap and no duplicate."""
    by_lead: dict[str, list[int]] = defaultdict(list)
    for change in changes:
        by_lead[change.lead_id].append(change.sequence)
    return [
        f"{lead}: sequences {seqs}"
        for lead, seqs in by_lead.items()
        if seqs != list(range(1, len(seqs) + 1))
    ]

"""What a partition's switch to a new model emits: pure, no I/O, no clock.

A worker that reaches a partition's switch record has the live states of its leads (every
event before the record applied under the old model) and replays the same records under
the new model (:mod:`services.scoring.replay`). The switch turns the two into what the
one switch transaction writes: for every lead its new score, as a score update whose
``sequence`` follows the live one; for every lead whose stage differs, one stage change
from the live stage to the new one, with the next change ``sequence`` and the new model
named in its reason; and the new states, carrying those sequences on. Everything is a
function of the states, the replay and the switch record, so a switch redone after a
crash emits the same bytes (same sequences, same ``change_id``).

A lead the replay does not know (its events are no longer in ``leadflow.events``:
retention) keeps its live state and is not rescored: engagement cannot be recomputed
without its events. ``leadflow rescore --publish`` refuses to publish over such a history.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.scoring.lead import LeadState
from services.scoring.publication import Switch
from services.scoring.replay import Replayed
from services.scoring.scoring import NewScore, change_id
from shared.events import Score, StageChange


@dataclass
class SwitchPlan:
    leads: dict[str, LeadState] = field(default_factory=dict)
    """The partition's states from the switch on: the replayed ones, sequences carried on."""
    scores: list[NewScore] = field(default_factory=list)
    stage_changes: list[StageChange] = field(default_factory=list)
    not_rescored: list[str] = field(default_factory=list)
    """Live leads without events left to replay: kept as they are."""


def plan_switch(live: Mapping[str, LeadState], replayed: Replayed, switch: Switch) -> SwitchPlan:
    """The switch of one partition from ``live`` to ``replayed`` (see the module)."""
    plan = SwitchPlan()
    for lead_id, state in live.items():
        if lead_id not in replayed.leads:
            plan.leads[lead_id] = state
            plan.not_rescored.append(lead_id)
    for lead_id, new in replayed.leads.items():
        score = replayed.scores[lead_id]
        before = live.get(lead_id)
        if before is not None:
            new.score_sequence = before.score_sequence + 1
            new.change_sequence = before.change_sequence
            if new.stage != before.stage:
                new.change_sequence += 1
                plan.stage_changes.append(_change(new, before, score, switch, replayed))
        plan.leads[lead_id] = new
        plan.scores.append(
            dataclasses.replace(
                score, sequence=new.score_sequence, trigger_event_id=switch.event_id
            )
        )
    return plan


def _change(
    new: LeadState, before: LeadState, score: NewScore, switch: Switch, replayed: Replayed
) -> StageChange:
    assert new.stage is not None  # a replayed lead has had at least one event
    why = replayed.reasons.get(new.lead_id)
    return StageChange(
        change_id=change_id(new.lead_id, new.change_sequence),
        lead_id=new.lead_id,
        sequence=new.change_sequence,
        from_stage=before.stage,
        to_stage=new.stage,
        reason=switch.reason if why is None else f"{switch.reason}: {why}",
        trigger_event_id=switch.event_id,
        occurred_at=switch.published_at,
        score=Score(fit=score.fit, engagement=score.engagement, total=score.total),
        model_version=switch.version,
    )

"""Applying one event to one lead: the pure heart of the scoring service.

:func:`apply_event` does no I/O and reads no clock: its outputs depend only on
the lead's state, the event and the model. That is what lets the worker replay
a partition after a crash and emit byte-identical scores and stage changes
(same sequences, same ``change_id``), which downstream consumers de-duplicate.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

from services.scoring.lead import DEFAULT_HORIZON, DerivedFit, LeadState, micros, utc_day
from services.scoring.model import ScoringModel
from services.scoring.rules import (
    Contribution,
    engagement_label,
    fit_contributions,
    match_engagement_rule,
)
from services.scoring.stages import DomainError, next_move
from shared.events import Event, Score, ScoreUpdate, Stage, StageChange

__all__ = ["DEFAULT_HORIZON", "DomainError", "NewScore", "Outcome", "apply_event", "change_id"]

_CHANGE_NAMESPACE = uuid.UUID("5b0f6f3e-5d0c-4b8e-9a57-6c1d7a1f4e21")
"""Fixed forever: changing it would change every change_id of a replay."""


@dataclass(frozen=True, slots=True)
class NewScore:
    """A score update as plain values, field for field the wire model :class:`ScoreUpdate`.

    Every applied event yields one, and building and encoding the pydantic model per event
    cost more than scoring the event: the worker encodes this directly (:meth:`to_json`),
    into the very bytes ``ScoreUpdate.model_dump_json`` gives.
    """

    lead_id: str
    sequence: int
    fit: float
    engagement: float
    total: float
    as_of: datetime
    stage: Stage
    model_version: str
    trigger_event_id: str
    breakdown: tuple[Contribution, ...]

    def to_json(self) -> bytes:
        # a dict: orjson encodes dicts several times faster than slotted dataclasses
        return orjson.dumps(
            {
                "lead_id": self.lead_id,
                "sequence": self.sequence,
                "fit": self.fit,
                "engagement": self.engagement,
                "total": self.total,
                "as_of": self.as_of,
                "stage": self.stage,
                "model_version": self.model_version,
                "trigger_event_id": self.trigger_event_id,
                "breakdown": self.breakdown,
            },
            option=orjson.OPT_UTC_Z,
        )

    def to_model(self) -> ScoreUpdate:
        return ScoreUpdate.model_validate(self, from_attributes=True)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying one event produced.

    A skipped event (``skipped`` says why) produces nothing and leaves
    ``state`` as it was; an applied one always produces a score, and a
    stage change when the lead moved.
    """

    state: LeadState
    score: NewScore | None = None
    stage_change: StageChange | None = None
    skipped: str | None = None

    @property
    def score_update(self) -> ScoreUpdate | None:
        """The score as the wire model (validated: for tests and tools, not the hot path)."""
        return None if self.score is None else self.score.to_model()


def change_id(lead_id: str, sequence: int) -> str:
    """Deterministic, so a replayed stage change keeps its identity."""
    return str(uuid.uuid5(_CHANGE_NAMESPACE, f"{lead_id}\n{sequence}"))


def apply_event(
    state: LeadState | None,
    event: Event,
    model: ScoringModel,
    horizon: timedelta = DEFAULT_HORIZON,
    *,
    in_place: bool = False,
) -> Outcome:
    """Score ``event`` for its lead; ``state`` is ``None`` for a lead never seen before.

    The input state is never modified, unless ``in_place``: then ``state`` itself is
    updated and returned, which saves a copy per event for a caller that throws every state
    away when it cannot commit them (the worker). The first event of a lead always yields
    a stage change with ``from_stage=None``: to ``lead``, or straight to the
    furthest stage it already qualifies for (one change, never two). Raises
    :class:`DomainError` for an event that cannot be applied (a ``stage.set``
    to an unknown stage, or an event of another lead).
    """
    if state is not None:
        if state.lead_id != event.lead_id:
            raise DomainError(f"event of lead {event.lead_id!r} applied to lead {state.lead_id!r}")
        skipped = state.skip_reason(event.event_id, event.occurred_at, horizon)
        if skipped is not None:
            return Outcome(state, skipped=skipped)

    lead = state if state is not None and in_place else _fresh(state, event.lead_id)
    at = event.occurred_at
    lead.merge_traits(event.traits, at)
    _engage(lead, event, model)
    if event.type in model.stages.opportunity.intent_events and lead.intent_event is None:
        lead.intent_event = event.type
    as_of = lead.record(event.event_id, at, horizon)
    lead.score_sequence += 1

    half_life, now = model.engagement.half_life_seconds, as_of.timestamp()
    fits, fit = _fit(lead, model)
    engagement = lead.engagement.value_at(now, half_life)
    total = fit + engagement

    previous = lead.stage
    move = next_move(
        previous, event.type, event.properties, (fit, engagement), lead.intent_event, model
    )
    change = None
    if move is not None:
        lead.stage = move.to_stage
        lead.change_sequence += 1
        change = StageChange(
            change_id=change_id(lead.lead_id, lead.change_sequence),
            lead_id=lead.lead_id,
            sequence=lead.change_sequence,
            from_stage=previous,
            to_stage=move.to_stage,
            reason=move.reason,
            trigger_event_id=event.event_id,
            occurred_at=at,
            score=Score(fit=fit, engagement=engagement, total=total),
            model_version=model.version,
        )
    if lead.stage is None:  # unreachable: a lead's first event always moves it
        raise DomainError(f"lead {lead.lead_id!r} has no stage after event {event.event_id!r}")

    labels = _engagement_labels(model)
    engaged = tuple(
        Contribution(
            rule=labels[index] if index < len(labels) else _unknown_rule(index),
            axis="engagement",
            points=rule.decayed.value_at(now, half_life),
            count=rule.count,
        )
        for index, rule in sorted(lead.engagement.rules.items())
    )
    new_score = NewScore(
        lead.lead_id,
        lead.score_sequence,
        fit,
        engagement,
        total,
        as_of,
        lead.stage,
        model.version,
        event.event_id,
        fits + engaged,
    )
    return Outcome(lead, score=new_score, stage_change=change)


def _fresh(state: LeadState | None, lead_id: str) -> LeadState:
    return LeadState(lead_id) if state is None else state.copy()


def _fit(lead: LeadState, model: ScoringModel) -> tuple[tuple[Contribution, ...], float]:
    """The fit contributions of the lead's traits, reused while neither traits nor model change.

    The contributions are immutable, so every score update (and every lead with the same
    matches) may share them.
    """
    derived = lead.fit_holds(model)
    if derived is None:
        fits = tuple(fit_contributions(model, lead.trait_values()))
        key = (id(model), tuple(c["rule"] for c in fits))  # labels are unique in a model
        derived = _FITS.get(key)
        if derived is None or derived.model is not model:
            if len(_FITS) >= 4096:
                _FITS.clear()
            derived = _FITS[key] = DerivedFit(model, fits, float(sum(c["points"] for c in fits)))
        lead.keep_fit(derived)
    return derived.contributions, derived.fit


_FITS: dict[tuple[int, tuple[str, ...]], DerivedFit] = {}
"""Interned fits: at most one per model and set of matching rules (64 for the default)."""


def _engage(lead: LeadState, event: Event, model: ScoringModel) -> None:
    """Add the points of the first matching engagement rule, unless its daily cap is used up."""
    index = match_engagement_rule(model, event.type, event.properties)
    if index is None:
        return
    rule = model.engagement.rules[index]
    if rule.max_per_day is not None:
        day = utc_day(micros(event.occurred_at))
        if not lead.take_cap_slot(index, day, rule.max_per_day):
            return  # over the cap: the event is still applied, it just scores 0
    at, half_life = event.occurred_at.timestamp(), model.engagement.half_life_seconds
    lead.engagement = lead.engagement.add(index, rule.points, at, half_life)


def _unknown_rule(index: int) -> str:
    return f"engagement.rules[{index}]"  # a state scored under a model with more rules


_LABELS: dict[int, tuple[ScoringModel, tuple[str, ...]]] = {}


def _engagement_labels(model: ScoringModel) -> tuple[str, ...]:
    """The labels of a model's engagement rules, built once per model object (models are
    frozen); held with the model itself, so a recycled ``id`` cannot match."""
    held = _LABELS.get(id(model))
    if held is None or held[0] is not model:
        if len(_LABELS) >= 32:
            _LABELS.clear()
        rules = model.engagement.rules
        held = _LABELS[id(model)] = (model, tuple(map(engagement_label, range(len(rules)), rules)))
    return held[1]

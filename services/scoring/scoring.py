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

from services.scoring.lead import DEFAULT_HORIZON, LeadState, Skip, SkipKind, micros, utc_day
from services.scoring.model import ScoringModel
from services.scoring.rules import Contribution, fit_contributions
from services.scoring.stages import DomainError, explicit_move, next_move, recycles
from shared.events import Event, Score, ScoreUpdate, Stage, StageChange

__all__ = [
    "DEFAULT_HORIZON",
    "DomainError",
    "NewScore",
    "Outcome",
    "Skip",
    "SkipKind",
    "apply_event",
    "change_id",
]

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
    half_life_seconds: float | None = None
    merged_from: str | None = None
    """The anonymous lead this update merged in (an identity merge's update only)."""

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
                "half_life_seconds": self.half_life_seconds,
                "merged_from": self.merged_from,
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
    skipped: Skip | None = None

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
    explicit = explicit_move(event.type, event.properties)  # raises before any change
    book = model.rulebook

    lead = state if state is not None and in_place else _fresh(state, event.lead_id)
    at = event.occurred_at
    if explicit is not None and recycles(lead.stage, event.type, event.properties):
        lead.engagement = lead.engagement.recycle(at.timestamp())
        lead.intent_event = None
    lead.merge_traits(event.traits, at)
    _engage(lead, event, model)
    if event.type in book.intent_events and lead.intent_event is None:
        lead.intent_event = event.type
    as_of = lead.record(event.event_id, at, horizon)
    lead.score_sequence += 1

    half_life, now = book.half_life, as_of.timestamp()
    fits, fit = _fit(lead, model)
    engagement = lead.engagement.value_at(now, half_life)
    total = fit + engagement
    recycled = lead.engagement.recycled_at is not None
    qualifying = lead.engagement.qualifying_at(now, half_life) if recycled else engagement

    previous = lead.stage
    move = next_move(
        previous, explicit, (fit, qualifying), lead.intent_event, model, recycled=recycled
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
            source=event.source,
        )
    if lead.stage is None:  # unreachable: a lead's first event always moves it
        raise DomainError(f"lead {lead.lead_id!r} has no stage after event {event.event_id!r}")

    new_score = _new_score(lead, model, fits, fit, engagement, event.event_id)
    return Outcome(lead, score=new_score, stage_change=change)


def current_score(lead: LeadState, model: ScoringModel, trigger_event_id: str) -> NewScore:
    """The lead's score as of its latest event, under ``model``, as its next update (the
    sequence is the lead's): for a change to a lead that is not one event (a merge)."""
    if lead.stage is None or lead.as_of is None:
        raise DomainError(f"lead {lead.lead_id!r} has no score before its first event")
    fits, fit = _fit(lead, model)
    engagement = lead.engagement.value_at(lead.as_of.timestamp(), model.rulebook.half_life)
    return _new_score(lead, model, fits, fit, engagement, trigger_event_id)


def _new_score(
    lead: LeadState,
    model: ScoringModel,
    fits: tuple[Contribution, ...],
    fit: float,
    engagement: float,
    trigger_event_id: str,
) -> NewScore:
    book = model.rulebook
    half_life = book.half_life
    assert lead.as_of is not None  # scored: set
    assert lead.stage is not None
    now = lead.as_of.timestamp()
    engaged = tuple(
        Contribution(
            rule=book.engagement_label(rule_id),
            axis="engagement",
            points=rule.decayed.value_at(now, half_life),
            count=rule.count,
        )
        for rule_id, rule in book.in_model_order(lead.engagement.rules)
    )
    return NewScore(
        lead.lead_id,
        lead.score_sequence,
        fit,
        engagement,
        fit + engagement,
        lead.as_of,
        lead.stage,
        model.version,
        trigger_event_id,
        fits + engaged,
        half_life,
    )


def _fresh(state: LeadState | None, lead_id: str) -> LeadState:
    return LeadState(lead_id) if state is None else state.copy()


def _fit(lead: LeadState, model: ScoringModel) -> tuple[tuple[Contribution, ...], float]:
    """The fit contributions of the lead's traits, reused while neither traits nor model change.

    The contributions are immutable, so every score update (and every lead with the same
    matches) may share them: the model's rulebook interns them.
    """
    book = model.rulebook
    derived = lead.fit_holds(book)
    if derived is None:
        derived = book.interned_fit(tuple(fit_contributions(model, lead.trait_values())))
        lead.keep_fit(derived)
    return derived.contributions, derived.fit


def _engage(lead: LeadState, event: Event, model: ScoringModel) -> None:
    """Add the points of the first matching engagement rule, unless its daily cap is used up."""
    rule = model.rulebook.engagement_rule(event.type, event.properties)
    if rule is None:
        return
    if rule.max_per_day is not None:
        day = utc_day(micros(event.occurred_at))
        if not lead.take_cap_slot(rule.id, day, rule.max_per_day):
            return  # over the cap: the event is still applied, it just scores 0
    at, half_life = event.occurred_at.timestamp(), model.rulebook.half_life
    lead.engagement = lead.engagement.add(rule.id, rule.points, at, half_life)

"""The stage machine (docs/architecture.md §1): when a lead moves, where to, and why.

Automatic moves only go forward (lead -> prospect -> opportunity), as far as
the scores allow in ONE move, because a CRM wants to hear "became an
opportunity" once, not two changes stamped with the same event. Everything
else (customer, disqualified, any backward move) is a human decision and only
comes from an explicit CRM event; the explicit event itself never also
triggers an automatic move, so a ``stage.set`` back to ``lead`` sticks until
the next event is scored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import JsonValue

from services.scoring.model import ScoringModel
from services.scoring.rules import format_number
from shared.events import DEAL_WON, LEAD_DISQUALIFIED, STAGE_SET, Stage, crm_move

AUTOMATIC = (Stage.LEAD, Stage.PROSPECT, Stage.OPPORTUNITY)
"""The stages the scores drive, in their forward order."""

RECYCLE_REASON = "recycle"
"""``stage.set`` with ``properties.reason: "recycle"`` recycles the lead, whichever way it
moves (or if it stays): see :func:`recycles`."""

_ORDER = {
    Stage.LEAD: 0,
    Stage.PROSPECT: 1,
    Stage.OPPORTUNITY: 2,
    Stage.CUSTOMER: 3,
    Stage.DISQUALIFIED: 3,
}
"""How far along a stage is: a ``stage.set`` to an earlier automatic stage is backward."""

__all__ = [
    "DEAL_WON",
    "LEAD_DISQUALIFIED",
    "STAGE_SET",
    "DomainError",
    "Move",
    "next_move",
    "recycles",
]


class DomainError(ValueError):
    """An event that cannot be applied to a lead; the message names the bad property."""


@dataclass(frozen=True, slots=True)
class Move:
    to_stage: Stage
    reason: str


def next_move(
    current: Stage | None,
    explicit: Move | None,
    scores: tuple[float, float],
    intent_event: str | None,
    model: ScoringModel,
    *,
    recycled: bool = False,
) -> Move | None:
    """The one move this event causes, if any; ``explicit`` is what the event asks for
    (:func:`explicit_move`), ``scores`` (fit, qualifying engagement) after it.

    ``current is None`` means this is the lead's first event: the move then
    always exists (to ``lead`` at least), so a CRM learns of every new lead.
    ``recycled``: the engagement counts only since the lead's latest recycle (the reason
    says so).
    """
    if explicit is not None:
        return None if explicit.to_stage == current else explicit
    return automatic_move(current, scores, intent_event, model, recycled=recycled)


def recycles(current: Stage | None, event_type: str, properties: Mapping[str, JsonValue]) -> bool:
    """Whether a valid CRM event recycles its lead: a ``stage.set`` backward to an automatic
    stage (``opportunity -> lead``, ``customer -> prospect``, out of ``disqualified``), or
    one whose ``properties.reason`` is ``recycle``. A recycled lead must qualify again on
    what happens from then on (docs/architecture.md §1)."""
    if event_type != STAGE_SET or current is None:
        return False
    reason = properties.get("reason")
    if isinstance(reason, str) and reason.strip().lower() == RECYCLE_REASON:
        return True
    target = Stage(str(properties["stage"]))
    return target in AUTOMATIC and _ORDER[target] < _ORDER[current]


def explicit_move(event_type: str, properties: Mapping[str, JsonValue]) -> Move | None:
    """The move a CRM event asks for (:func:`shared.events.crm_move`, the rule ingest
    applies too); raises :class:`DomainError` for one that names no valid move."""
    try:
        asked = crm_move(event_type, properties)
    except ValueError as exc:
        raise DomainError(str(exc)) from exc
    return None if asked is None else Move(*asked)


def automatic_move(
    current: Stage | None,
    scores: tuple[float, float],
    intent_event: str | None,
    model: ScoringModel,
    *,
    recycled: bool = False,
) -> Move | None:
    """The furthest forward stage the scores qualify for, if it is ahead of ``current``.

    The reason names what was newly met: the fit (from lead), and the
    engagement or the intent event (to opportunity).
    """
    if current is not None and current not in AUTOMATIC:
        return None  # customer and disqualified are left only by an explicit event
    fit, engagement = scores
    prospect, opportunity = model.stages.prospect, model.stages.opportunity
    target = Stage.LEAD
    if fit >= prospect.fit_min:
        target = Stage.PROSPECT
        if engagement >= opportunity.engagement_min or intent_event is not None:
            target = Stage.OPPORTUNITY
    if current is not None and AUTOMATIC.index(target) <= AUTOMATIC.index(current):
        return None  # most events: decided before any reason is worded
    reasons: list[str] = []
    if target is not Stage.LEAD and (current is None or current is Stage.LEAD):
        reasons.append(f"fit {format_number(fit)} >= {format_number(prospect.fit_min)}")
    if target is Stage.OPPORTUNITY:
        if engagement >= opportunity.engagement_min:
            engaged = format_number(engagement)
            what = "engagement since recycle" if recycled else "engagement"
            reasons.append(f"{what} {engaged} >= {format_number(opportunity.engagement_min)}")
        else:
            reasons.append(f"intent event {intent_event}")
    return Move(target, " and ".join(reasons) or "first event")

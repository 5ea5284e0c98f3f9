"""Which events an endpoint wants: its event types, stages, and score movements.

A CRM that syncs opportunities does not want every page view's score update:
``to_stages`` keeps only moves into those stages; score events go out only when
the total crosses one of ``score_thresholds`` (either way) or has moved at least
``score_min_delta`` since the last score this endpoint was sent for the lead.
With neither, every score update goes out. ``account_score_thresholds`` and
``account_score_min_delta`` do the same for ``account.score_changed`` on the account's
total: a separate pair, since an account's total sums its contacts' and so lives on
another scale than a lead's.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from shared.events import Stage

Points = Annotated[float, Field(allow_inf_nan=False)]


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    to_stages: list[Stage] | None = Field(
        default=None,
        min_length=1,
        description="Only stage changes into these stages (lead.stage_changed); all when null.",
    )
    score_thresholds: list[Points] = Field(
        default_factory=list,
        max_length=20,
        description="Send lead.score_changed when the total crosses one of these, up or down.",
    )
    score_min_delta: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None,
        description="Send lead.score_changed when the total moved by at least this many points"
        " since the last score sent to this endpoint for the lead.",
    )
    account_score_thresholds: list[Points] = Field(
        default_factory=list,
        max_length=20,
        description="Send account.score_changed when the account's total crosses one of"
        " these, up or down.",
    )
    account_score_min_delta: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None,
        description="Send account.score_changed when the account's total moved by at least"
        " this many points since the last one sent to this endpoint for the account.",
    )


def wants_stage(filters: Filters, to_stage: Stage) -> bool:
    return filters.to_stages is None or to_stage in filters.to_stages


def crossed(threshold: float, before: float, after: float) -> bool:
    """Moved from below to at-or-above, or back: equal counts as reached."""
    return (before < threshold) != (after < threshold)


def wants_score(
    filters: Filters, previous: float | None, total: float, last_sent: float | None
) -> bool:
    """``previous``: the lead's total before this update (None: its first);
    ``last_sent``: the total last sent to this endpoint for the lead (None: never)."""
    return moved_enough(
        filters.score_thresholds, filters.score_min_delta, previous, total, last_sent
    )


def wants_account_score(
    filters: Filters, previous: float | None, total: float, last_sent: float | None
) -> bool:
    """As :func:`wants_score`, on an account's total with the account filters."""
    return moved_enough(
        filters.account_score_thresholds,
        filters.account_score_min_delta,
        previous,
        total,
        last_sent,
    )


def moved_enough(
    thresholds: list[float],
    min_delta: float | None,
    previous: float | None,
    total: float,
    last_sent: float | None,
) -> bool:
    if not thresholds and min_delta is None:
        return True
    before = 0.0 if previous is None else previous
    if any(crossed(t, before, total) for t in thresholds):
        return True
    if min_delta is not None:
        reference = 0.0 if last_sent is None else last_sent
        return abs(total - reference) >= min_delta
    return False

"""Stage changes and score updates as scoring publishes them, for the webhooks tests."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.events import RuleContribution, Score, ScoreUpdate, Stage, StageChange

WHEN = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def change(lead: str, sequence: int, to: Stage, frm: Stage | None = None) -> StageChange:
    return StageChange(
        change_id=f"{lead}#{sequence}",
        lead_id=lead,
        sequence=sequence,
        from_stage=frm,
        to_stage=to,
        reason="total >= 50",
        trigger_event_id=f"{lead}/e{sequence}",
        occurred_at=WHEN,
        score=Score(fit=30, engagement=25, total=55),
        model_version="default-1",
    )


def update(lead: str, sequence: int, total: float, rules: int = 1) -> ScoreUpdate:
    return ScoreUpdate(
        lead_id=lead,
        sequence=sequence,
        fit=total / 2,
        engagement=total / 2,
        total=total,
        as_of=WHEN,
        stage=Stage.LEAD,
        model_version="default-1",
        trigger_event_id=f"{lead}/e{sequence}",
        breakdown=[
            RuleContribution(rule=f"rule-{i}-" + "x" * 40, axis="fit", points=i)
            for i in range(rules)
        ],
    )

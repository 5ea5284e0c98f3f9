"""Stage changes, lead and account scores as scoring publishes them, for the webhooks tests."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import JsonValue

from shared.account_events import AccountMember, AccountScore
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


def account(
    account_id: str,
    sequence: int,
    total: float,
    previous: float | None = None,
    *,
    traits: dict[str, JsonValue] | None = None,
    rules: int = 0,
) -> AccountScore:
    """An account's roll-up as the account stage publishes it, its previous total given."""
    return AccountScore(
        account_id=account_id,
        sequence=sequence,
        fit=10.0,
        contacts=2,
        engaged_contacts=1,
        contact_total_sum=total - 10,
        contact_total_max=total - 20,
        total=total,
        previous_total=previous,
        as_of=WHEN,
        model_version="default-1",
        breakdown=[
            RuleContribution(rule=f"account-rule-{i}-" + "x" * 40, axis="fit", points=i)
            for i in range(rules)
        ],
        traits=traits or {"name": "Initech"},
        members=[
            AccountMember(
                lead_id="ada@initech.com",
                fit=total - 20,
                engagement=0,
                total=total - 20,
                stage=Stage.PROSPECT,
                engaged=True,
            )
        ],
    )

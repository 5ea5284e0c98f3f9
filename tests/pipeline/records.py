"""Records as scoring publishes them, and a whole-database snapshot to compare states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, MetaData, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.account_events import AccountMember, AccountScore
from shared.events import RuleContribution, Score, ScoreUpdate, Stage, StageChange

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
READ_AT = datetime(2027, 1, 1, tzinfo=UTC)
"""When the tests read leads back: after every record's time (these records do not decay)."""


def stage_change(
    lead_id: str,
    sequence: int,
    to_stage: Stage,
    from_stage: Stage | None = None,
    *,
    total: float = 60.0,
    reason: str = "fit 60 >= 50",
) -> StageChange:
    return StageChange(
        change_id=f"{lead_id}#{sequence}",
        lead_id=lead_id,
        sequence=sequence,
        from_stage=from_stage,
        to_stage=to_stage,
        reason=reason,
        trigger_event_id=f"e-{lead_id}-{sequence}",
        occurred_at=T0 + timedelta(minutes=sequence),
        score=Score(fit=total / 2, engagement=total / 2, total=total),
        model_version="default-1",
    )


def score_update(
    lead_id: str,
    sequence: int,
    total: float,
    stage: Stage = Stage.LEAD,
    *,
    fit: float | None = None,
    as_of: datetime | None = None,
    half_life_seconds: float | None = None,
) -> ScoreUpdate:
    fit = round(total * 0.75, 6) if fit is None else fit
    return ScoreUpdate(
        lead_id=lead_id,
        sequence=sequence,
        fit=fit,
        engagement=total - fit,
        total=total,
        as_of=T0 + timedelta(minutes=sequence) if as_of is None else as_of,
        stage=stage,
        model_version="default-1",
        trigger_event_id=f"e-{lead_id}-{sequence}",
        half_life_seconds=half_life_seconds,
        breakdown=[
            RuleContribution(rule="industry in [software, saas]", axis="fit", points=fit),
            RuleContribution(
                rule="email.clicked", axis="engagement", points=total - fit, count=sequence
            ),
        ],
    )


def account_score(
    account_id: str,
    sequence: int,
    contacts: dict[str, float],
    *,
    fit: float = 0.0,
    traits: dict[str, Any] | None = None,
    engaged_min: float = 10.0,
) -> AccountScore:
    """An account's roll-up as scoring publishes it: ``contacts`` maps lead ids to totals
    (engagement a third of each total), summed and maxed as the account stage does."""
    members = sorted(
        (
            AccountMember(
                lead_id=lead_id,
                fit=total - total / 3,
                engagement=total / 3,
                total=total,
                stage=Stage.PROSPECT if total >= 50 else Stage.LEAD,
                engaged=total / 3 >= engaged_min,
            )
            for lead_id, total in contacts.items()
        ),
        key=lambda member: (-member.total, member.lead_id),
    )
    contact_sum = sum(contacts.values())
    return AccountScore(
        account_id=account_id,
        sequence=sequence,
        fit=fit,
        contacts=len(members),
        engaged_contacts=sum(1 for member in members if member.engaged),
        contact_total_sum=contact_sum,
        contact_total_max=max(contacts.values()) if contacts else None,
        total=fit + contact_sum,
        previous_total=None,
        as_of=T0 + timedelta(minutes=sequence),
        model_version="default-1",
        breakdown=[RuleContribution(rule="plan in [enterprise]", axis="fit", points=fit)]
        if fit
        else [],
        traits=traits or {},
        members=members,
    )


async def snapshot(sessions: async_sessionmaker[AsyncSession]) -> dict[str, list[Any]]:
    """Every row of every table, in a stable order: equal snapshots mean nothing changed."""
    orders = {
        "leads": "lead_id",
        "stage_changes": "position",
        "score_breakdowns": "lead_id",
        "accounts": "account_id",
        "account_contacts": "account_id, lead_id",
        "lead_aliases": "alias_id",
    }
    async with sessions() as session:
        return {
            table: [
                tuple(row)
                for row in await session.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))
            ]
            for table, order in orders.items()
        }


def _tables_holding(connection: Connection, needle: str) -> dict[str, int]:
    metadata = MetaData()
    metadata.reflect(connection)
    found: dict[str, int] = {}
    for table in metadata.sorted_tables:
        rows = connection.execute(select(table)).all()
        hits = sum(1 for row in rows if any(needle in str(value) for value in row))
        if hits:
            found[table.name] = hits
    return found


async def tables_holding(engine: AsyncEngine, needle: str) -> dict[str, int]:
    """Every table of the database as it is (reflected, not as the models say), with how
    many of its rows hold ``needle`` anywhere in any column."""
    async with engine.connect() as connection:
        return await connection.run_sync(_tables_holding, needle)

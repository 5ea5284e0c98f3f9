"""Lead aliases: anonymous ids merged into a known lead, as the pipeline keeps them.

Scoring merges an anonymous lead (``anon:<id>``) into a known one (docs/architecture.md
§5.12) and gives the known lead one score update naming the anonymous id in
``merged_from``. :func:`services.pipeline.store.record_batch` hands the batch here, in
its transaction:

- :func:`merges_in` (pure) finds the merges among the score updates, every one of them
  and not only each lead's newest, so a merge followed in the same batch by a later
  update of the known lead is not missed;
- :func:`record` records each alias once (``lead_aliases``; a redelivered update finds it
  there and changes nothing), then deletes every row of each aliased id the batch wrote,
  merged or listed in an account: its lead row, stage changes, breakdown and account
  places (its journey and spans follow by the foreign keys' cascade). The anonymous
  lead's events are the known lead's now, counted in its score; its own stage changes
  would count a second person in the funnel. A record of the aliased id read late
  (redelivered, or behind on the other topic) is written and deleted in the same
  transaction, so it never brings the anonymous lead back. The batch withdraws the
  merged ids from the analytics summaries first and refreshes them last, as it does for
  an erased lead.
- :func:`forget` deletes the aliases of an erased lead, and an erased alias.

Reads resolve an alias (:func:`resolve`) and list a lead's merges (:func:`merges_into`).
Only an ``anon:`` id can be an alias (``shared.events.merge_target``), so a batch naming
none costs no statement here, nor does resolving any other id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.pipeline import accounts_store
from services.pipeline.api_models import LeadMerge
from services.pipeline.journeys import BATCH, BATCH_LEADS, among, bound_chunks
from services.pipeline.tables import (
    LeadAliasRow,
    LeadRow,
    ScoreBreakdownRow,
    StageChangeRow,
)
from shared.account_events import AccountScore
from shared.database import upsert_insert
from shared.erasure_signals import ErasureSignal
from shared.events import ANONYMOUS_PREFIX, ScoreUpdate

ALIASES = cast(Table, LeadAliasRow.__table__)
OWN_ROWS = tuple(cast(Table, row.__table__) for row in (ScoreBreakdownRow, StageChangeRow, LeadRow))
"""An aliased id's rows, children first."""


@dataclass(frozen=True, slots=True)
class Merge:
    """One merge as the known lead's score update tells it."""

    alias_id: str
    lead_id: str
    merge_id: str
    merged_at: datetime


def merges_in(score_updates: Iterable[ScoreUpdate]) -> list[Merge]:
    """The merges the score updates carry, each alias once (the first seen)."""
    found: dict[str, Merge] = {}
    for update in score_updates:
        if update.merged_from is not None and update.merged_from not in found:
            found[update.merged_from] = Merge(
                update.merged_from, update.lead_id, update.trigger_event_id, update.as_of
            )
    return [found[alias] for alias in sorted(found)]


def anonymous(lead_ids: Iterable[str]) -> list[str]:
    """The ids that can be aliases, once each, in order."""
    return sorted({lead_id for lead_id in lead_ids if lead_id.startswith(ANONYMOUS_PREFIX)})


async def record(
    session: AsyncSession,
    dialect: str,
    merges: Sequence[Merge],
    written: Iterable[str],
    account_scores: Iterable[AccountScore],
    now: datetime,
) -> None:
    """Record ``merges``; delete the rows of every aliased id among ``written`` and the
    members of ``account_scores`` (an account's record from before the merge, read late).

    After the batch's writes and before its analytics refresh (see the module).
    """
    if merges:
        rows = [
            {
                "alias_id": merge.alias_id,
                "lead_id": merge.lead_id,
                "merge_id": merge.merge_id,
                "merged_at": merge.merged_at,
                "recorded_at": now,
            }
            for merge in merges
        ]
        await session.execute(upsert_insert(dialect, ALIASES).on_conflict_do_nothing(), rows)
    members = (member.lead_id for account in account_scores for member in account.members)
    candidates = anonymous([*written, *(merge.alias_id for merge in merges), *members])
    for chunk in bound_chunks(candidates):
        aliased = list(await session.scalars(_aliased(), chunk))
        if aliased:  # most batches name visitors not merged: one look-up, nothing to delete
            for statement in _rows_of():
                await session.execute(statement, {BATCH_LEADS: aliased})


@cache
def _aliased() -> Any:
    """Which of a batch's ids are aliases."""
    return select(ALIASES.c.alias_id).where(among(ALIASES.c.alias_id, BATCH))


@cache
def _rows_of() -> list[Any]:
    """Every row of a batch's ids, children first (account places have no foreign key)."""
    tables = (accounts_store.CONTACTS, *OWN_ROWS)
    return [delete(table).where(among(table.c.lead_id, BATCH)) for table in tables]


async def forget(session: AsyncSession, signal: ErasureSignal, *, first: bool) -> None:
    """The erased lead's aliases go, and the alias the erased id itself is (no table may
    keep the id, §5.8). ``first``: the first signal of its request, which deletes them.

    Aliases are written from the scores topic. A second signal on the scores topic means
    the stage changes' came first, so what the scores wrote in between was still the
    erased lead's: deleted too. A second signal on the stage changes follows the scores',
    so the aliases written since belong to a new lead of the same id: kept.
    """
    if not first and signal.topic != "scores":
        return
    lead = signal.lead_id
    await session.execute(
        delete(ALIASES).where(or_(ALIASES.c.lead_id == lead, ALIASES.c.alias_id == lead))
    )


async def resolve(session: AsyncSession, lead_id: str) -> str | None:
    """The known lead ``lead_id`` is an alias of; ``None`` when it is none."""
    if not lead_id.startswith(ANONYMOUS_PREFIX):
        return None
    found = await session.scalar(select(ALIASES.c.lead_id).where(ALIASES.c.alias_id == lead_id))
    return None if found is None else str(found)


async def merged_into(session: AsyncSession, lead_id: str) -> list[str]:
    """The anonymous ids merged into ``lead_id`` (what erasing it erases too)."""
    found = await session.scalars(
        select(ALIASES.c.alias_id).where(ALIASES.c.lead_id == lead_id).order_by(ALIASES.c.alias_id)
    )
    return list(found)


async def merges_into(session: AsyncSession, lead_id: str) -> list[LeadMerge]:
    """The merges into ``lead_id``, oldest first (ties by the alias)."""
    rows = await session.execute(
        select(ALIASES)
        .where(ALIASES.c.lead_id == lead_id)
        .order_by(ALIASES.c.merged_at, ALIASES.c.alias_id)
    )
    return [
        LeadMerge(
            merged_from=row.alias_id,
            merge_id=row.merge_id,
            merged_at=row.merged_at,
            recorded_at=row.recorded_at,
        )
        for row in rows
    ]

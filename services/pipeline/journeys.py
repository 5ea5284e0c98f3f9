"""The derived rows the analytics read, kept in step with the history they come from.

Two things are derived, both only from a lead's row and its stage changes:

- ``stage_changes.left_at``: when the lead left the stage a change put it in, the
  ``occurred_at`` of its next change by sequence (null while it is the newest);
- ``lead_journeys``: one row per lead, how far it got and when (see
  :class:`~services.pipeline.tables.LeadJourneyRow`).

:func:`refresh` recomputes both for the leads a batch touched, inside the batch's own
transaction (:func:`services.pipeline.store.record_batch` calls it last), so the
analytics never see a history without its derived rows. Recomputing rather than
applying a delta keeps one definition, whatever order records arrive in, and covers
erasures too: a lead whose rows were deleted has nothing left to derive. Migration
0005 fills the rows of an existing database with the very same statements.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache, lru_cache
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import KeyedColumnElement

from services.pipeline.tables import LeadJourneyRow, LeadRow, StageChangeRow
from shared.database import upsert_insert
from shared.events import Stage

FORWARD_RANKS = {Stage.LEAD: 0, Stage.PROSPECT: 1, Stage.OPPORTUNITY: 2, Stage.CUSTOMER: 3}
"""The funnel's forward stages by rank; ``disqualified`` has none."""

REACHED_COLUMNS = {
    Stage.PROSPECT: "prospect_at",
    Stage.OPPORTUNITY: "opportunity_at",
    Stage.CUSTOMER: "customer_at",
}
"""The journey column holding when a lead first reached each stage after ``lead``."""

CHUNK = 500
"""Leads per statement: far below SQLite's limit on bound parameters."""

BATCH_LEADS = "lead_ids"
"""The bound parameter naming a batch's leads in the statements built once (:class:`Batch`)."""


class Batch:
    """In place of a list of lead ids: the statement names a batch's leads by the bound
    parameter ``lead_ids`` (an expanding ``IN``), given at execution, so it is built once
    and executed per batch; building the summaries' statements anew for each batch took
    more time than running them.

    Not an array with ``= ANY``: its text would be the same for every batch, and
    PostgreSQL's generic plan for it, used after a few executions, is a slow one."""


BATCH = Batch()


def bound_chunks(lead_ids: Sequence[str]) -> Iterator[dict[str, list[str]]]:
    """The parameters that bind ``lead_ids`` to a statement built on :data:`BATCH`: at most
    ``CHUNK`` leads each, padded to a power of two (or to ``CHUNK``) by repeating the last.

    An expanding ``IN`` renders one parameter per lead, so its text differs with every
    number of leads; with the counts rounded up, a statement takes a handful of texts and
    the driver reuses its prepared form (no round trip to prepare it, nor PostgreSQL's
    parsing and planning of it) instead of preparing it anew for nearly every batch. A
    lead named twice in an ``IN`` selects its rows once.
    """
    for start in range(0, len(lead_ids), CHUNK):
        chunk = list(lead_ids[start : start + CHUNK])
        size = min(CHUNK, 1 << (len(chunk) - 1).bit_length())
        yield {BATCH_LEADS: chunk + chunk[-1:] * (size - len(chunk))}


Leads = Iterable[str] | Batch | None
"""Which leads a statement covers: these, a batch's (bound at execution), or all of them."""


def among(column: Any, lead_ids: Iterable[str] | Batch) -> ColumnElement[bool]:
    if not isinstance(lead_ids, Batch):
        return cast(ColumnElement[bool], column.in_(list(lead_ids)))
    return cast(ColumnElement[bool], column.in_(bindparam(BATCH_LEADS, expanding=True)))


async def execute_bound(
    session: AsyncSession, statement: Any, bound: Mapping[str, list[str]]
) -> Sequence[Any]:
    """Run a statement built on :data:`BATCH` for one chunk of :func:`bound_chunks`; its rows.

    On asyncpg the statement's SQL for the chunk's size is rendered once
    (:func:`_expanded`) and run by the driver on the session's connection, in its
    transaction: SQLAlchemy's per-execution work (expanding the ``IN``, processing each
    parameter, building the result) cost about as much CPU as the database spent on
    these statements. Elsewhere (SQLite), SQLAlchemy runs it.
    """
    connection = await session.connection()
    if connection.dialect.driver != "asyncpg":
        result = await session.execute(statement, bound)
        return result.all() if isinstance(statement, Select) else ()
    driver = (await connection.get_raw_connection()).driver_connection
    if driver is None:
        raise RuntimeError("the session's connection has no asyncpg connection")
    if not driver.is_in_transaction():
        # SQLAlchemy's adapter begins the driver's transaction at its first statement
        raise RuntimeError("run a statement through the session before a batch statement")
    leads = bound[BATCH_LEADS]
    sql, slots = _expanded(statement, connection.dialect, len(leads))
    return cast(
        Sequence[Any],
        await driver.fetch(sql, *(leads[i] if i is not None else v for i, v in slots)),
    )


@lru_cache(maxsize=256)
def _expanded(
    statement: Any, dialect: Dialect, size: int
) -> tuple[str, tuple[tuple[int | None, Any], ...]]:
    """The SQL of ``statement`` with ``size`` leads, and what binds each parameter: the
    index of a lead, or the value the statement holds (``None`` in the first place)."""
    compiled = statement.compile(dialect=dialect)
    placeholders = [f"lead {index}" for index in range(size)]
    state = compiled.construct_expanded_state({BATCH_LEADS: placeholders})
    if state.processors:
        raise NotImplementedError("a batch statement whose parameters need processing")
    index = {f"{BATCH_LEADS}_{n + 1}": n for n in range(size)}
    slots = tuple(
        (index[name], None) if name in index else (None, state.parameters[name])
        for name in state.positiontup or ()
    )
    return state.statement, slots


LEADS = cast(Table, LeadRow.__table__)
CHANGES = cast(Table, StageChangeRow.__table__)
JOURNEYS = cast(Table, LeadJourneyRow.__table__)


def forward_rank(column: ColumnElement[Any]) -> ColumnElement[int]:
    """The rank of a stage column; NULL for ``disqualified`` and for a NULL stage."""
    return case({stage.value: rank for stage, rank in FORWARD_RANKS.items()}, value=column)


def _greater(left: ColumnElement[int], right: ColumnElement[int]) -> ColumnElement[int]:
    """The larger of two non-NULL integers, spelled alike on both databases."""
    return case((left >= right, left), else_=right)


def journey_rows(lead_ids: Leads) -> Any:
    """SELECT of the journey row of each lead in ``lead_ids`` (every lead when ``None``).

    A lead without stage changes still has a row (entered_at NULL), so the funnel counts
    every lead, as :func:`services.pipeline.store.funnel` does.
    """
    c = CHANGES.c
    to_rank = forward_rank(c.to_stage)
    per_lead = select(
        c.lead_id,
        func.min(c.occurred_at).label("entered_at"),
        func.max(func.coalesce(to_rank, -1)).label("to_rank"),
        func.max(func.coalesce(forward_rank(c.from_stage), -1)).label("from_rank"),
        func.max(
            case(
                (
                    or_(
                        c.to_stage == Stage.DISQUALIFIED.value,
                        c.from_stage == Stage.DISQUALIFIED.value,
                    ),
                    1,
                ),
                else_=0,
            )
        ).label("dq"),
        *(
            func.min(case((to_rank >= FORWARD_RANKS[stage], c.occurred_at))).label(name)
            for stage, name in REACHED_COLUMNS.items()
        ),
    ).group_by(c.lead_id)
    if lead_ids is not None:
        per_lead = per_lead.where(among(c.lead_id, lead_ids))
    history = per_lead.subquery("history")
    first = CHANGES.alias("first_change")
    source = (
        select(first.c.source)
        .where(first.c.lead_id == LEADS.c.lead_id)
        .order_by(first.c.sequence)
        .limit(1)
        .scalar_subquery()
    )
    current = func.coalesce(forward_rank(LEADS.c.stage), -1)
    furthest = _greater(
        _greater(func.coalesce(history.c.to_rank, -1), func.coalesce(history.c.from_rank, -1)),
        current,
    )
    query = select(
        LEADS.c.lead_id,
        LEADS.c.stage,
        # a lead only ever seen disqualified still reached ``lead``
        _greater(furthest, literal(0)).label("furthest"),
        or_(func.coalesce(history.c.dq, 0) == 1, LEADS.c.stage == Stage.DISQUALIFIED.value).label(
            "disqualified"
        ),
        history.c.entered_at,
        source.label("source"),
        *(history.c[name] for name in REACHED_COLUMNS.values()),
    ).select_from(LEADS.outerjoin(history, history.c.lead_id == LEADS.c.lead_id))
    if lead_ids is not None:
        query = query.where(among(LEADS.c.lead_id, lead_ids))
    else:
        query = query.where(true())  # SQLite: INSERT ... SELECT ... ON CONFLICT needs a WHERE
    return query


JOURNEY_COLUMNS = (
    "lead_id",
    "stage",
    "furthest",
    "disqualified",
    "entered_at",
    "source",
    *REACHED_COLUMNS.values(),
)


def upsert_journeys(dialect: str, lead_ids: Leads) -> Any:
    """INSERT ... SELECT the journeys of ``lead_ids``, rewriting only rows that differ."""
    insert = upsert_insert(dialect, JOURNEYS)
    statement = insert.from_select(list(JOURNEY_COLUMNS), journey_rows(lead_ids))
    new = statement.excluded
    derived = [name for name in JOURNEY_COLUMNS if name != "lead_id"]
    return statement.on_conflict_do_update(
        index_elements=[JOURNEYS.c.lead_id],
        set_={name: new[name] for name in derived},
        where=or_(*(JOURNEYS.c[name].is_distinct_from(new[name]) for name in derived)),
    )


def set_left_at(lead_ids: Leads) -> Any:
    """UPDATE each change's ``left_at`` to the next change's time, where it differs."""
    following = CHANGES.alias("following")
    next_time: KeyedColumnElement[Any] | Any = (
        select(following.c.occurred_at)
        .where(
            and_(
                following.c.lead_id == CHANGES.c.lead_id,
                following.c.sequence > CHANGES.c.sequence,
            )
        )
        .order_by(following.c.sequence)
        .limit(1)
        .scalar_subquery()
    )
    statement = update(CHANGES).values(left_at=next_time)
    differs = CHANGES.c.left_at.is_distinct_from(next_time)
    if lead_ids is None:
        return statement.where(differs)
    return statement.where(among(CHANGES.c.lead_id, lead_ids), differs)


@cache
def _batch_left_at(dialect: str) -> Any:
    return set_left_at(BATCH)


@cache
def _batch_journeys(dialect: str) -> Any:
    return upsert_journeys(dialect, BATCH)


async def moved_by_scores(session: AsyncSession, stages: Mapping[str, str]) -> list[str]:
    """Of leads that get only score updates (``stages``: lead id -> the stage of its newest
    one), those whose journey the batch may change: the ones without a journey yet, or
    whose journey's stage is another.

    A journey derives from the lead's stage and its stage changes; a lead with no new
    stage change keeps its history, so only a new stage can change its journey. The
    journey's stage is the lead's (every write of a lead's stage refreshes it), and a
    score update either sets that stage or is older and changes nothing. So a lead whose
    journey already shows the incoming stage keeps its journey and its summary counts as
    they are, whichever way its update goes; on a scoring stream that is nearly every
    lead of a batch, since a stage moves with a stage change in the same transaction.
    """
    kept: dict[str, str] = {}
    for chunk in bound_chunks(sorted(stages)):
        rows = await execute_bound(session, _batch_journey_stages(), chunk)
        kept.update((lead_id, stage) for lead_id, stage in rows)
    return [lead for lead in sorted(stages) if kept.get(lead) != stages[lead]]


@cache
def _batch_journey_stages() -> Any:
    return select(JOURNEYS.c.lead_id, JOURNEYS.c.stage).where(among(JOURNEYS.c.lead_id, BATCH))


async def refresh(
    session: AsyncSession, lead_ids: Iterable[str], changed: Iterable[str] = ()
) -> None:
    """Recompute the derived rows of ``lead_ids``; ``changed`` are those whose history grew.

    Only a lead that got new stage changes can have a ``left_at`` to move; every lead of
    ``lead_ids`` gets its journey recomputed (a batch passes those it may change: see
    :func:`moved_by_scores`), and a lead that no longer exists loses it (the foreign
    key's cascade covers a deleted lead row).
    """
    dialect = session.get_bind().dialect.name
    leads = sorted(set(lead_ids))
    grown = sorted(set(changed))
    for chunk in bound_chunks(grown):
        await execute_bound(session, _batch_left_at(dialect), chunk)
    for chunk in bound_chunks(leads):
        await execute_bound(session, _batch_journeys(dialect), chunk)


async def rebuild(session: AsyncSession) -> None:
    """Recompute every derived row (after a bulk load that bypassed :func:`refresh`)."""
    dialect = session.get_bind().dialect.name
    await session.execute(set_left_at(None))
    await session.execute(upsert_journeys(dialect, None))

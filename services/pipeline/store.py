"""Persistence of the pipeline: idempotent batch writes, and the queries the API serves.

Writing (:func:`record_batch`) is called by the Kafka consumer with what it
polled from ``leadflow.stage-changes`` and ``leadflow.scores``; it commits one
transaction per batch, and the consumer commits its offsets only after it.
Kafka delivers at least once, so every write is idempotent on the records'
identity (``lead_id`` + ``sequence``): a redelivered batch changes nothing.

The lead's stage and score: scoring numbers a lead's score updates and its
stage changes with two separate counters (``score_sequence`` counts applied
events, ``change_sequence`` counts moves), so a score update and a stage change
cannot be ordered against each other. But every applied event yields a score
update that carries the stage *after* any move that event caused, in the same
Kafka transaction as the stage change. Hence the rule:

- once a lead has a score update, the newest one (highest ``score_sequence``)
  sets its stage and score;
- before that, the newest stage change (highest ``change_sequence``) sets them
  (a stage change carries the score at the move), so a lead is never listed
  without a stage or a total.

Each upsert applies this against what the row holds, so the result does not
depend on how the two topics' records interleave or are batched. The one
visible lag: a stage change recorded in an earlier batch than the score update
of the same event shows in the history and the feed before the lead row
moves; the score update is in the same Kafka transaction, so it follows within
the next poll.

Accounts: :func:`record_batch` also takes the records of ``leadflow.account-scores`` and
writes them in the same transaction through :mod:`services.pipeline.accounts_store`.

Erasure: :func:`record_batch` also takes scoring's erasure signals; it deletes every row
of the erased lead (its lead row, history and breakdown) in the batch's transaction,
before the batch's other writes, and records the signal on the erase request (see
:mod:`shared.erasure_signals`). The requests themselves keep only a hash of
the lead id (:func:`lead_hash`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import cache, lru_cache
from itertools import pairwise
from typing import Any, TypeVar, cast

import orjson
from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    SQLColumnExpression,
    Table,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline import accounts_store, aliases, analytics_summaries, journeys
from services.pipeline.api_models import (
    Funnel,
    FunnelStage,
    RecordedStageChange,
    ScoreBreakdown,
    StageChangeFeed,
    StageConversion,
    StageHistory,
)
from services.pipeline.decay import StoredEngagement
from services.pipeline.tables import (
    ChangePositionRow,
    ErasureRow,
    LeadRow,
    ScoreBreakdownRow,
    StageChangeRow,
)
from shared.account_events import AccountScore
from shared.database import upsert_insert
from shared.erasure_signals import ErasureSignal
from shared.events import ScoreUpdate, Stage, StageChange

FORWARD_STAGES = (Stage.LEAD, Stage.PROSPECT, Stage.OPPORTUNITY, Stage.CUSTOMER)
"""The funnel, in order; ``disqualified`` leaves it and is counted on its own."""

WRITE_LOCK_KEY = zlib.crc32(b"leadflow.pipeline.record_batch")
"""PostgreSQL advisory lock that serialises batch writers (see :func:`record_batch`)."""

LEADS = cast(Table, LeadRow.__table__)
STAGE_CHANGES = cast(Table, StageChangeRow.__table__)
SCORE_BREAKDOWNS = cast(Table, ScoreBreakdownRow.__table__)
ERASURES = cast(Table, ErasureRow.__table__)

DECAY = ("decay_rate", "decay_sign", "decay_log2")


SessionFactory = async_sessionmaker[AsyncSession]
Keyed = TypeVar("Keyed", StageChange, ScoreUpdate)


class InvalidCursor(ValueError):
    """A ``cursor`` this API did not issue (or that was altered)."""


# --- writing ---------------------------------------------------------------------------


async def record_batch(
    session_factory: SessionFactory,
    stage_changes: Sequence[StageChange],
    score_updates: Sequence[ScoreUpdate],
    erasures: Sequence[ErasureSignal] = (),
    account_scores: Sequence[AccountScore] = (),
) -> None:
    """Persist one polled batch in ONE transaction, idempotently.

    - ``erasures`` go first: every row of each erased lead is deleted, and the signal is
      recorded on its erase request (see :func:`_erase`); the batch's records of the same
      lead id that follow are written after, as a new lead (the caller drops those that
      preceded the signal: :func:`~shared.erasure_signals.after_erasures`);

    - a stage change is recorded once per ``(lead_id, sequence)`` (and per
      ``change_id``); redelivery, within the batch or later, changes nothing;
    - a score update overwrites the lead's score and breakdown only when its
      ``sequence`` is greater than the stored one: an old update never wins;
    - a lead row is created by whichever record type arrives first; its stage
      and score follow the module's rule (newest score update; the newest
      stage change only until the lead has a score update).

    - an account score is applied only when its ``sequence`` is greater than the stored
      one (:func:`services.pipeline.accounts_store.record_account_scores`);

    - a score update naming ``merged_from`` records the alias, and every row of an aliased
      id goes, late records of it too (:mod:`services.pipeline.aliases`);

    - last, the rows the analytics read are recomputed for every lead the batch may
      change them of (:func:`services.pipeline.journeys.refresh`): those with stage
      changes, erased or merged away, or whose score update carries another stage than
      their journey's (:func:`services.pipeline.journeys.moved_by_scores`), in the same
      transaction, and so are their counts in the summaries, withdrawn first and added
      back last
      (:mod:`services.pipeline.analytics_summaries`).

    Duplicates inside the batch are dropped before the upserts (PostgreSQL
    refuses to update one row twice in one statement). On PostgreSQL, batches
    take a transaction-scoped advisory lock: feed positions then become
    visible in commit order (a CRM polling ``after=`` never skips a change
    committed late by another replica), and concurrent replicas cannot
    deadlock on each other's lead rows. Errors propagate: the caller retries
    the whole batch, which is safe because every write is idempotent.

    Raises ``ValueError`` for a non-finite score (SQLite would store NaN as
    NULL and it would break the listing's order), before touching the database.
    """
    if not stage_changes and not score_updates and not erasures and not account_scores:
        return
    _require_storable_scores(stage_changes, score_updates)
    for account in account_scores:
        accounts_store.require_storable(account)
    now = datetime.now(UTC)
    changes = _first_per_key(stage_changes)
    newest_changes = _newest_per_lead(changes)
    newest_scores = _newest_per_lead(score_updates)

    grown = [c.lead_id for c in newest_changes] + [signal.lead_id for signal in erasures]
    merges = aliases.merges_in(score_updates)  # the merged ids' rows go, as erased ones'
    grown += [merge.alias_id for merge in merges]
    scored_only = {s.lead_id: s.stage.value for s in newest_scores}
    for lead_id in grown:
        scored_only.pop(lead_id, None)

    async with session_factory() as session, session.begin():
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            await session.execute(select(func.pg_advisory_xact_lock(WRITE_LOCK_KEY)))
        # a write before the first read: SQLite's deferred transaction then waits for the
        # write lock here, rather than failing later to upgrade a read of an older snapshot
        writes_rows = bool(newest_changes or newest_scores or account_scores)
        position = await _next_change_position(session) if writes_rows else 0
        # the leads whose derived rows the batch may change (a score alone rarely does)
        written = grown + await journeys.moved_by_scores(session, scored_only)
        # before any other write: what these leads count in the summaries now
        await analytics_summaries.withdraw(session, written, grown)
        if erasures:
            await _erase(session, dialect, erasures, now)
        execute = await _executor(session)
        # Lead rows first: stage changes and breakdowns reference them.
        if newest_changes:
            await execute(
                _leads_from_changes(dialect),
                [_lead_row(c, now, position) for c in newest_changes],
            )
        if newest_scores:
            await execute(
                _leads_from_scores(dialect),
                [_lead_score_row(s, now, position) for s in newest_scores],
            )
        if changes:
            await execute(_stage_changes(dialect), [_stage_change_row(c, now) for c in changes])
        if newest_scores:
            await execute(_breakdowns(dialect), [_breakdown_row(s, now) for s in newest_scores])
        await accounts_store.record_account_scores(
            session, dialect, account_scores, now, position, execute
        )
        await aliases.record(session, dialect, merges, [*grown, *scored_only], account_scores, now)
        # last, so the analytics' derived rows see every write of the batch
        await journeys.refresh(session, written, changed=grown)
        await analytics_summaries.restore(session, written, grown)


async def _next_change_position(session: AsyncSession) -> int:
    """The change position of this batch: every lead row it writes takes it.

    Assigned inside the writers' serialisation (PostgreSQL's advisory lock, SQLite's
    single writer), so positions become visible in commit order: a reader that saw
    position ``p`` will never later see a lead written at ``p`` or below that it could
    have missed. A batch that turns out to change nothing leaves a gap, which is harmless.
    """
    counter = cast(Table, ChangePositionRow.__table__)
    position = await session.scalar(
        counter.update()
        .where(counter.c.id == 1)
        .values(last=counter.c.last + 1)
        .returning(counter.c.last)
    )
    if position is None:
        raise RuntimeError("the change_positions counter row is missing; run the migrations")
    return int(position)


Executor = Callable[[Insert, list[dict[str, Any]]], Awaitable[None]]


def lead_hash(lead_id: str) -> str:
    """What an erase request keeps of the lead id: its SHA-256, in hex."""
    return hashlib.sha256(lead_id.encode()).hexdigest()


async def _erase(
    session: AsyncSession, dialect: str, erasures: Sequence[ErasureSignal], now: datetime
) -> None:
    """Delete the erased leads' rows; record each signal on its erase request.

    The first signal of a request deletes every row of the lead. Rows written between
    the two signals come from two topics: the one whose signal came first now carries a
    new lead of the same id (keep it); the other still carries the erased lead (stale).
    So the second signal deletes only what its own topic wrote: see
    :func:`_forget_stale`. Idempotent: a redelivered signal finds nothing more to delete
    and keeps the times first recorded. A signal whose request is not in the table (its
    ``DELETE`` answered 503, yet the erase record did land) creates it.
    """
    for signal in erasures:
        other = ERASURES.c[_OTHER_TOPIC[signal.topic]]
        second = signal.erase_id is not None and (
            await session.scalar(
                select(other.is_not(None)).where(ERASURES.c.erase_id == signal.erase_id)
            )
        )
        if second:
            await _forget_stale(session, signal)
        else:
            for table in (SCORE_BREAKDOWNS, STAGE_CHANGES, LEADS):  # children first
                await session.execute(delete(table).where(table.c.lead_id == signal.lead_id))
            await accounts_store.forget_contacts(session, signal.lead_id)
        await aliases.forget(session, signal, first=not second)
        if signal.erase_id is not None:
            row = {
                "erase_id": signal.erase_id,
                "lead_hash": lead_hash(signal.lead_id),
                "requested_at": signal.requested_at or now,
                f"{signal.topic}_erased_at": now,
            }
            await session.execute(_erasure_signal(dialect, signal.topic), row)


_OTHER_TOPIC = {"scores": "stage_changes_erased_at", "stage_changes": "scores_erased_at"}


async def _forget_stale(session: AsyncSession, signal: ErasureSignal) -> None:
    """What the signal's own topic wrote of the lead since the other topic's signal.

    Stage changes: the history, and a lead row that has no score update (it came from
    them). Scores: the breakdown, and the lead row's score part; the row then shows the
    newest stage change of the new lead, as a lead with no score update yet does, or
    goes when there is none.
    """
    lead = signal.lead_id
    if signal.topic == "stage_changes":
        await session.execute(delete(STAGE_CHANGES).where(STAGE_CHANGES.c.lead_id == lead))
        await session.execute(
            delete(LEADS).where(LEADS.c.lead_id == lead, LEADS.c.score_sequence.is_(None))
        )
        await session.execute(
            LEADS.update().where(LEADS.c.lead_id == lead).values(change_sequence=None)
        )
        return
    await session.execute(delete(SCORE_BREAKDOWNS).where(SCORE_BREAKDOWNS.c.lead_id == lead))
    newest = (
        await session.execute(
            select(STAGE_CHANGES)
            .where(STAGE_CHANGES.c.lead_id == lead)
            .order_by(STAGE_CHANGES.c.sequence.desc())
            .limit(1)
        )
    ).first()
    if newest is None:
        await session.execute(delete(LEADS).where(LEADS.c.lead_id == lead))
        return
    await session.execute(
        LEADS.update()
        .where(LEADS.c.lead_id == lead, LEADS.c.score_sequence.is_not(None))
        .values(
            stage=newest.to_stage,
            fit=newest.fit,
            engagement=newest.engagement,
            total=newest.total,
            model_version=newest.model_version,
            as_of=None,
            score_sequence=None,
        )
    )


@cache
def _erasure_signal(dialect: str, topic: str) -> postgresql.Insert | sqlite.Insert:
    """Record one topic's signal on its request; complete it once the other's is there."""
    insert = upsert_insert(dialect, ERASURES)
    mine = f"{topic}_erased_at"
    other = ERASURES.c["stage_changes_erased_at" if topic == "scores" else "scores_erased_at"]
    recorded = func.coalesce(ERASURES.c[mine], insert.excluded[mine])
    return insert.on_conflict_do_update(
        index_elements=[ERASURES.c.erase_id],
        set_={
            mine: recorded,
            "completed_at": func.coalesce(
                ERASURES.c.completed_at, case((other.is_not(None), recorded), else_=None)
            ),
        },
    )


async def request_erasure(
    session_factory: SessionFactory, erase_id: str, lead_id: str, requested_at: datetime
) -> None:
    """Record a pending erase request (before its erase record is published)."""
    async with session_factory() as session, session.begin():
        dialect = session.get_bind().dialect.name
        row = {"erase_id": erase_id, "lead_hash": lead_hash(lead_id), "requested_at": requested_at}
        await session.execute(upsert_insert(dialect, ERASURES).on_conflict_do_nothing(), row)


async def withdraw_erasure(session_factory: SessionFactory, erase_id: str) -> None:
    """Forget a request whose erase record Kafka did not confirm, unless a signal of it
    arrived meanwhile (then it did land, and the request stays)."""
    async with session_factory() as session, session.begin():
        await session.execute(
            delete(ERASURES).where(
                ERASURES.c.erase_id == erase_id,
                ERASURES.c.scores_erased_at.is_(None),
                ERASURES.c.stage_changes_erased_at.is_(None),
            )
        )


async def erasure(session: AsyncSession, erase_id: str) -> ErasureRow | None:
    return await session.get(ErasureRow, erase_id)


async def _executor(session: AsyncSession) -> Executor:
    """How to run one statement over many rows: asyncpg's own ``executemany`` on PostgreSQL.

    SQLAlchemy's executemany processes every parameter of every row in Python before
    handing them to the driver, which costs about as much as the database's work for
    these batches. On asyncpg the statement is compiled once by SQLAlchemy (same SQL,
    same casts) and its rows go to the driver as tuples, on the session's connection and
    inside its transaction. The only bind processing the columns need is done here: the
    JSON document is encoded once (asyncpg takes JSONB as text) and times are already
    aware UTC datetimes. Other drivers and SQLite keep SQLAlchemy's path.
    """
    connection = await session.connection()
    if connection.dialect.name != "postgresql" or connection.dialect.driver != "asyncpg":

        async def through_sqlalchemy(statement: Insert, rows: list[dict[str, Any]]) -> None:
            await session.execute(statement, rows)

        return through_sqlalchemy
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    if driver is None:
        raise RuntimeError("the session's connection has no asyncpg connection")
    dialect = connection.dialect

    async def through_asyncpg(statement: Insert, rows: list[dict[str, Any]]) -> None:
        sql, order = _compiled(statement, dialect, tuple(rows[0]))
        await driver.executemany(
            sql, [tuple(_driver_value(row[name]) for name in order) for row in rows]
        )

    return through_asyncpg


@lru_cache(maxsize=64)
def _compiled(
    statement: Insert, dialect: Dialect, columns: tuple[str, ...]
) -> tuple[str, list[str]]:
    """The SQL of one of this module's statements, and the row keys in bind order.

    The statements are built once per dialect, so this holds four entries per engine;
    compiling them took a fifth of a batch's time in Python, rebuilding them as much again.
    """
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))
    return compiled.string, list(compiled.positiontup or [])


def _driver_value(value: Any) -> Any:
    """A bind value as asyncpg takes it for our columns (see :func:`_executor`)."""
    if isinstance(value, list):  # the breakdown document (JSONB)
        return orjson.dumps(value).decode()
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; pass an aware one")
    return value


def _require_storable_scores(
    stage_changes: Iterable[StageChange], score_updates: Iterable[ScoreUpdate]
) -> None:
    for change in stage_changes:
        score = change.score
        if not all(map(math.isfinite, (score.fit, score.engagement, score.total))):
            raise ValueError(
                f"stage change {change.lead_id!r}#{change.sequence} has a non-finite score"
            )
    for update in score_updates:
        if not all(map(math.isfinite, (update.fit, update.engagement, update.total))):
            raise ValueError(
                f"score update {update.lead_id!r}#{update.sequence} has a non-finite score"
            )


def _first_per_key(changes: Iterable[StageChange]) -> list[StageChange]:
    """One record per ``(lead_id, sequence)``, the first seen, in per-lead sequence order.

    Sorting by lead and sequence gives each lead's changes ascending feed
    positions, and takes row locks in one order.
    """
    unique: dict[tuple[str, int], StageChange] = {}
    for change in changes:
        unique.setdefault((change.lead_id, change.sequence), change)
    return [unique[key] for key in sorted(unique)]


def _newest_per_lead(records: Iterable[Keyed]) -> list[Keyed]:
    """The highest-sequence record of each lead (the first seen on a tie), by lead_id."""
    newest: dict[str, Keyed] = {}
    for record in records:
        held = newest.get(record.lead_id)
        if held is None or record.sequence > held.sequence:
            newest[record.lead_id] = record
    return [newest[lead_id] for lead_id in sorted(newest)]


@cache
def _leads_from_changes(dialect: str) -> postgresql.Insert | sqlite.Insert:
    """Create the lead, or move it to a newer stage change while it has no score update."""
    insert = upsert_insert(dialect, LEADS)
    new = insert.excluded
    no_score_yet = LEADS.c.score_sequence.is_(None)

    def new_while_no_score(column: str) -> ColumnElement[Any]:
        return case((no_score_yet, new[column]), else_=LEADS.c[column])

    return insert.on_conflict_do_update(
        index_elements=[LEADS.c.lead_id],
        set_={
            **{
                column: new_while_no_score(column)
                for column in ("stage", "fit", "engagement", "total", "model_version", *DECAY)
            },
            "change_sequence": new.change_sequence,
            "updated_at": new.updated_at,
            "change_position": new.change_position,
        },
        where=or_(LEADS.c.change_sequence.is_(None), new.change_sequence > LEADS.c.change_sequence),
    )


@cache
def _leads_from_scores(dialect: str) -> postgresql.Insert | sqlite.Insert:
    """Create the lead, or take a newer score update's stage and score."""
    insert = upsert_insert(dialect, LEADS)
    new = insert.excluded
    columns = (
        "stage", "fit", "engagement", "total", "as_of", "model_version", "score_sequence", *DECAY,
    )  # fmt: skip
    return insert.on_conflict_do_update(
        index_elements=[LEADS.c.lead_id],
        set_={
            **{column: new[column] for column in columns},
            "updated_at": new.updated_at,
            "change_position": new.change_position,
        },
        where=or_(LEADS.c.score_sequence.is_(None), new.score_sequence > LEADS.c.score_sequence),
    )


@cache
def _stage_changes(dialect: str) -> postgresql.Insert | sqlite.Insert:
    """Record a stage change once: redelivered, it changes nothing."""
    return upsert_insert(dialect, STAGE_CHANGES).on_conflict_do_nothing()


@cache
def _breakdowns(dialect: str) -> postgresql.Insert | sqlite.Insert:
    insert = upsert_insert(dialect, SCORE_BREAKDOWNS)
    new = insert.excluded
    columns = ("sequence", "fit", "engagement", "total", "as_of", "model_version", "breakdown")
    return insert.on_conflict_do_update(
        index_elements=[SCORE_BREAKDOWNS.c.lead_id],
        set_={**{name: new[name] for name in columns}, "updated_at": new.updated_at},
        where=new.sequence > SCORE_BREAKDOWNS.c.sequence,
    )


def _lead_row(change: StageChange, now: datetime, position: int) -> dict[str, Any]:
    return {
        "lead_id": change.lead_id,
        "stage": change.to_stage.value,
        "fit": change.score.fit,
        "engagement": change.score.engagement,
        "total": change.score.total,
        "as_of": None,
        "model_version": change.model_version,
        "score_sequence": None,
        "change_sequence": change.sequence,
        "updated_at": now,
        "change_position": position,
        **_decay_columns(StoredEngagement.of(change.score.engagement, None, None)),
    }


def _decay_columns(stored: StoredEngagement) -> dict[str, Any]:
    return {"decay_rate": stored.rate, "decay_sign": stored.sign, "decay_log2": stored.log2}


def _lead_score_row(update: ScoreUpdate, now: datetime, position: int) -> dict[str, Any]:
    return {
        "lead_id": update.lead_id,
        "stage": update.stage.value,
        "fit": update.fit,
        "engagement": update.engagement,
        "total": update.total,
        "as_of": update.as_of,
        "model_version": update.model_version,
        "score_sequence": update.sequence,
        "change_sequence": None,
        "updated_at": now,
        "change_position": position,
        **_decay_columns(
            StoredEngagement.of(update.engagement, update.as_of, update.half_life_seconds)
        ),
    }


def _stage_change_row(change: StageChange, now: datetime) -> dict[str, Any]:
    return {
        "lead_id": change.lead_id,
        "sequence": change.sequence,
        "change_id": change.change_id,
        "from_stage": None if change.from_stage is None else change.from_stage.value,
        "to_stage": change.to_stage.value,
        "reason": change.reason,
        "trigger_event_id": change.trigger_event_id,
        "occurred_at": change.occurred_at,
        "fit": change.score.fit,
        "engagement": change.score.engagement,
        "total": change.score.total,
        "model_version": change.model_version,
        "recorded_at": now,
        "source": change.source,
    }


def _breakdown_row(update: ScoreUpdate, now: datetime) -> dict[str, Any]:
    return {
        "lead_id": update.lead_id,
        "sequence": update.sequence,
        "fit": update.fit,
        "engagement": update.engagement,
        "total": update.total,
        "as_of": update.as_of,
        "model_version": update.model_version,
        # the JSON form of each RuleContribution, spelled out: model_dump took 20 us a record
        "breakdown": [
            {"rule": item.rule, "axis": item.axis, "points": item.points, "count": item.count}
            for item in update.breakdown
        ],
        "updated_at": now,
    }


# --- reading ---------------------------------------------------------------------------


START_OF_CHANGES = "0"
"""``?updated_after=0``: the change-ordered listing from the first lead ever written."""

MAX_CHANGE_POSITION = 2**63 - 1


def encode_change_cursor(position: int, lead_id: str) -> str:
    """Opaque to clients; tagged so a score-ordered cursor is never taken for one."""
    # UTF-8 rather than \u escapes: the longest lead id still fits the query's 2048 characters
    raw = json.dumps(["changes", position, lead_id], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_change_cursor(cursor: str) -> tuple[int, str]:
    """The (change_position, lead_id) a change cursor stands for; refuses anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
        match value:
            case ["changes", int() as position, str() as lead_id] if not isinstance(position, bool):
                lead_id.encode()
                if 0 <= position <= MAX_CHANGE_POSITION and not _CONTROL_CHARS.search(lead_id):
                    return position, lead_id
    except (binascii.Error, ValueError) as exc:  # UnicodeError is a ValueError
        raise InvalidCursor("is not one this API issued") from exc
    raise InvalidCursor("is not one this API issued")


def encode_cursor(total: float, lead_id: str) -> str:
    """A ``(total, id)`` keyset cursor, for listings by stored total (the accounts'; the
    leads' are valued at a moment, :mod:`services.pipeline.lead_reads`). Opaque to clients;
    JSON keeps the float exact (shortest round-trip repr)."""
    raw = json.dumps([total, lead_id], separators=(",", ":"), allow_nan=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (total, lead_id) a cursor stands for; anything we could not have issued is refused
    here rather than failing deeper (a huge number, a lone surrogate, a NUL for PostgreSQL)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
        match value:
            case [int() | float() as total, str() as lead_id] if not isinstance(total, bool):
                number = float(total)
                lead_id.encode()
                if math.isfinite(number) and not _CONTROL_CHARS.search(lead_id):
                    return number, lead_id
    except (binascii.Error, ValueError, OverflowError, RecursionError) as exc:
        # UnicodeError is a ValueError; RecursionError: JSON nested deeper than the parser goes
        raise InvalidCursor("is not one this API issued") from exc
    raise InvalidCursor("is not one this API issued")


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


async def lead_exists(session: AsyncSession, lead_id: str) -> bool:
    found = await session.scalar(select(literal(1)).where(LeadRow.lead_id == lead_id))
    return found is not None


async def history(session: AsyncSession, lead_id: str) -> StageHistory | None:
    """The lead's stage changes by sequence; ``None`` for a lead never seen."""
    rows = (
        await session.scalars(
            select(StageChangeRow)
            .where(StageChangeRow.lead_id == lead_id)
            .order_by(StageChangeRow.sequence)
        )
    ).all()
    if not rows and not await lead_exists(session, lead_id):
        return None
    return StageHistory(lead_id=lead_id, items=[_recorded(row) for row in rows])


async def breakdown(session: AsyncSession, lead_id: str) -> ScoreBreakdown | None:
    """The per-rule breakdown of the newest score update; ``None`` until there is one."""
    row = await session.get(ScoreBreakdownRow, lead_id)
    return None if row is None else ScoreBreakdown.model_validate(row, from_attributes=True)


async def feed(session: AsyncSession, *, after: int = 0, limit: int = 100) -> StageChangeFeed:
    """Every stage change once, in the order recorded, from just after position ``after``."""
    rows = (
        await session.scalars(
            select(StageChangeRow)
            .where(StageChangeRow.position > after)
            .order_by(StageChangeRow.position)
            .limit(limit)
        )
    ).all()
    items = [_recorded(row) for row in rows]
    return StageChangeFeed(items=items, next_after=items[-1].position if items else after)


async def feed_head(session: AsyncSession) -> int:
    """The newest feed position recorded; 0 while the feed is empty (a primary key lookup)."""
    newest = await session.scalar(select(func.max(StageChangeRow.position)))
    return 0 if newest is None else int(newest)


def _recorded(row: StageChangeRow) -> RecordedStageChange:
    return RecordedStageChange.model_validate(
        {
            "change_id": row.change_id,
            "lead_id": row.lead_id,
            "sequence": row.sequence,
            "from_stage": row.from_stage,
            "to_stage": row.to_stage,
            "reason": row.reason,
            "trigger_event_id": row.trigger_event_id,
            "occurred_at": row.occurred_at,
            "score": {"fit": row.fit, "engagement": row.engagement, "total": row.total},
            "model_version": row.model_version,
            "position": row.position,
            "recorded_at": row.recorded_at,
        }
    )


async def funnel(session: AsyncSession) -> Funnel:
    """Counts per stage now, how far leads ever got, and conversion between forward stages.

    A lead *reached* a forward stage when its history (any change's from or
    to stage) or its current stage is that stage or a later one: moving
    straight from lead to opportunity, or a deal won from prospect, counts as
    passing the stages in between, as a sales funnel reads. Disqualifying a
    lead does not undo how far it got. ``conversion(a -> b)`` is
    ``reached(b) / reached(a)``: of the leads that got at least as far as
    ``a``, the share that got to ``b``. Every known lead reached ``lead``.

    One statement, so the numbers come from one snapshot; it scans the
    history, which suits ops dashboards, not per-request hot paths.
    """
    rows = (await session.execute(_funnel_query())).all()
    current = dict.fromkeys(Stage, 0)
    reached = dict.fromkeys(Stage, 0)
    total_leads = 0
    for stage, furthest, disqualified, count in rows:
        total_leads += count
        current[Stage(stage)] += count
        for forward in FORWARD_STAGES[: furthest + 1]:
            reached[forward] += count
        if disqualified:
            reached[Stage.DISQUALIFIED] += count
    stages = [FunnelStage(stage=s, current=current[s], reached=reached[s]) for s in Stage]
    conversions = [
        StageConversion(
            from_stage=a,
            to_stage=b,
            rate=reached[b] / reached[a] if reached[a] else None,
        )
        for a, b in pairwise(FORWARD_STAGES)
    ]
    return Funnel(total_leads=total_leads, stages=stages, conversions=conversions)


def _funnel_query() -> Select[str, int, int, int]:
    def rank(column: SQLColumnExpression[str | None]) -> ColumnElement[int | None]:
        ranks = {stage.value: index for index, stage in enumerate(FORWARD_STAGES)}
        return case(ranks, value=column)  # NULL for disqualified (and a NULL from_stage)

    def disqualified(column: SQLColumnExpression[str | None]) -> ColumnElement[int]:
        return case((column == Stage.DISQUALIFIED.value, 1), else_=0)

    sightings = union_all(
        select(
            StageChangeRow.lead_id.label("lead_id"),
            rank(StageChangeRow.to_stage).label("rank"),
            disqualified(StageChangeRow.to_stage).label("dq"),
        ),
        select(
            StageChangeRow.lead_id,
            rank(StageChangeRow.from_stage),
            disqualified(StageChangeRow.from_stage),
        ),
        select(LeadRow.lead_id, rank(LeadRow.stage), disqualified(LeadRow.stage)),
    ).subquery("sightings")
    per_lead = (
        select(
            sightings.c.lead_id,
            func.coalesce(func.max(sightings.c.rank), 0).label("furthest"),
            func.max(sightings.c.dq).label("dq"),
        )
        .group_by(sightings.c.lead_id)
        .subquery("per_lead")
    )
    return (
        select(LeadRow.stage, per_lead.c.furthest, per_lead.c.dq, func.count())
        .join(per_lead, per_lead.c.lead_id == LeadRow.lead_id)
        .group_by(LeadRow.stage, per_lead.c.furthest, per_lead.c.dq)
    )

"""Every read and write of the webhooks database, in one place.

Callers pass a session factory or a session; each function is one unit of
work. Times come from the caller, so a test's clock decides what is due.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Table, bindparam, case, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.webhooks import metrics
from services.webhooks.fanout import Fanout, LeadTotal, Subscription
from services.webhooks.filters import Filters
from services.webhooks.tables import (
    AccountNoticeRow,
    AccountSequenceRow,
    AttemptRow,
    EndpointRow,
    LeadTotalRow,
    MessageRow,
    ScoreNoticeRow,
)
from shared.account_events import AccountScore
from shared.database import upsert_insert
from shared.events import ScoreUpdate, StageChange
from shared.sql_types import UtcDateTime

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
Status = Literal["pending", "delivered", "failed"]

MESSAGES: Table = MessageRow.__table__  # type: ignore[assignment]
LEAD_TOTALS: Table = LeadTotalRow.__table__  # type: ignore[assignment]
SCORE_NOTICES: Table = ScoreNoticeRow.__table__  # type: ignore[assignment]
ACCOUNT_SEQUENCES: Table = AccountSequenceRow.__table__  # type: ignore[assignment]
ACCOUNT_NOTICES: Table = AccountNoticeRow.__table__  # type: ignore[assignment]


def subscription(row: EndpointRow) -> Subscription:
    return Subscription(
        row.endpoint_id, frozenset(row.event_types), Filters.model_validate(row.filters)
    )


async def record_batch(
    sessions: async_sessionmaker[AsyncSession],
    changes: Sequence[StageChange],
    updates: Sequence[ScoreUpdate],
    now: datetime,
    erased: Iterable[str] = (),
    account_scores: Sequence[AccountScore] = (),
    handover: Handover | None = None,
) -> int:
    """Turn records into messages for the enabled endpoints, in one transaction; the count.

    With a ``handover``, up to its room of each endpoint's new messages are stored leased
    to the deliverer of this process, and listed in ``handover.taken`` once committed.

    Endpoints created after a record was read do not get it: a subscription starts
    from the moment it exists. ``erased`` leads lose every message, attempt and total
    first (the records of the batch that came after their erasure are a new lead).
    Account messages name no lead, so an erasure leaves them be.
    """
    async with sessions() as session, session.begin():
        await _erase(session, set(erased))
        dialect = session.get_bind().dialect.name
        enabled = await session.scalars(
            select(EndpointRow).where(EndpointRow.disabled_at.is_(None))
        )
        # No early return without subscriptions: the leads' totals are kept all the same,
        # so a later subscriber's first score event knows what came before.
        subs = [subscription(row) for row in enabled]
        leads = {u.lead_id for u in updates}
        fanout = Fanout(await _totals(session, leads), await _notices(session, subs, leads))
        accounts = {a.account_id for a in account_scores}
        fanout.accounts = await _account_sequences(session, accounts)
        fanout.account_notices = await _account_notices(session, subs, accounts)
        fanout.stage_changes(subs, changes)
        fanout.score_updates(subs, updates)
        fanout.account_scores(subs, account_scores)
        taken = await _write(session, dialect, fanout, leads, now, handover)
        await _write_accounts(session, dialect, fanout, accounts)
    if handover is not None:
        handover.taken = taken
    for message in fanout.messages:
        metrics.MESSAGES.labels(message.event_type.value).inc()
    return len(fanout.messages)


async def _erase(session: AsyncSession, leads: set[str]) -> None:
    """Everything kept about ``leads``: their messages (sent or not), attempts, totals."""
    if not leads:
        return
    ids = select(MessageRow.message_id).where(MessageRow.lead_id.in_(leads))
    await session.execute(delete(AttemptRow).where(AttemptRow.message_id.in_(ids)))
    await session.execute(delete(MessageRow).where(MessageRow.lead_id.in_(leads)))
    await session.execute(delete(LeadTotalRow).where(LeadTotalRow.lead_id.in_(leads)))
    await session.execute(delete(ScoreNoticeRow).where(ScoreNoticeRow.lead_id.in_(leads)))


async def _totals(session: AsyncSession, leads: set[str]) -> dict[str, LeadTotal]:
    if not leads:
        return {}
    rows = await session.scalars(select(LeadTotalRow).where(LeadTotalRow.lead_id.in_(leads)))
    return {r.lead_id: LeadTotal(r.sequence, r.total, r.previous_total) for r in rows}


async def _notices(
    session: AsyncSession, subs: list[Subscription], leads: set[str]
) -> dict[tuple[str, str], float]:
    if not leads or not subs:
        return {}
    query = select(ScoreNoticeRow).where(
        ScoreNoticeRow.lead_id.in_(leads),
        ScoreNoticeRow.endpoint_id.in_([s.endpoint_id for s in subs]),
    )
    return {(r.endpoint_id, r.lead_id): r.total for r in await session.scalars(query)}


async def _account_sequences(session: AsyncSession, accounts: set[str]) -> dict[str, int]:
    if not accounts:
        return {}
    query = select(AccountSequenceRow).where(AccountSequenceRow.account_id.in_(accounts))
    return {r.account_id: r.sequence for r in await session.scalars(query)}


async def _account_notices(
    session: AsyncSession, subs: list[Subscription], accounts: set[str]
) -> dict[tuple[str, str], float]:
    if not accounts or not subs:
        return {}
    query = select(AccountNoticeRow).where(
        AccountNoticeRow.account_id.in_(accounts),
        AccountNoticeRow.endpoint_id.in_([s.endpoint_id for s in subs]),
    )
    return {(r.endpoint_id, r.account_id): r.total for r in await session.scalars(query)}


async def _write_accounts(
    session: AsyncSession, dialect: str, fanout: Fanout, accounts: set[str]
) -> None:
    sequences = [
        {"account_id": a, "sequence": n} for a, n in fanout.accounts.items() if a in accounts
    ]
    if sequences:
        insert = upsert_insert(dialect, ACCOUNT_SEQUENCES)
        await session.execute(
            insert.on_conflict_do_update(
                index_elements=["account_id"], set_={"sequence": insert.excluded.sequence}
            ),
            sequences,
        )
    notices = [
        {"endpoint_id": e, "account_id": a, "total": t}
        for (e, a), t in fanout.account_notices.items()
        if a in accounts
    ]
    if notices:
        insert = upsert_insert(dialect, ACCOUNT_NOTICES)
        await session.execute(
            insert.on_conflict_do_update(
                index_elements=["endpoint_id", "account_id"],
                set_={"total": insert.excluded.total},
            ),
            notices,
        )


@dataclass
class Handover:
    """What the deliverer of this process can queue at once, by endpoint, of the messages a
    batch stores: those are stored leased to it (due at ``lease_until``, as a claim would
    leave them), so no claim sits between their commit and their post."""

    rooms: Mapping[str, int]
    lease_until: datetime
    taken: list[Claimed] = field(default_factory=list)
    """The messages stored leased, once the batch is committed (a redelivered record's
    message, already stored, is not among them)."""


def _handed_over(fanout: Fanout, handover: Handover | None) -> set[int]:
    """The indexes of the messages stored leased: each endpoint's first, up to its room."""
    if handover is None:
        return set()
    rooms = dict(handover.rooms)
    chosen = set()
    for index, message in enumerate(fanout.messages):
        if rooms.get(message.endpoint_id, 0) > 0:
            rooms[message.endpoint_id] -= 1
            chosen.add(index)
    return chosen


async def _write(
    session: AsyncSession,
    dialect: str,
    fanout: Fanout,
    leads: set[str],
    now: datetime,
    handover: Handover | None,
) -> list[Claimed]:
    taken: list[Claimed] = []
    if fanout.messages:
        leased = _handed_over(fanout, handover)
        rows = [
            {
                "endpoint_id": m.endpoint_id,
                "webhook_id": m.webhook_id,
                "event_type": m.event_type.value,
                "lead_id": m.lead_id,
                "body": m.body,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for m in fanout.messages
        ]
        insert = upsert_insert(dialect, MESSAGES).on_conflict_do_nothing()
        waiting = [row for index, row in enumerate(rows) if index not in leased]
        if waiting:
            await session.execute(insert, waiting)
        if leased and handover is not None:
            held = [{**rows[index], "next_attempt_at": handover.lease_until} for index in leased]
            returned = await session.execute(insert.returning(*CLAIMED_COLUMNS), held)
            taken = sorted((Claimed(*row) for row in returned), key=lambda c: c.message_id)
    totals = [
        {
            "lead_id": lead,
            "sequence": t.sequence,
            "total": t.total,
            "previous_total": t.previous_total,
        }
        for lead, t in fanout.totals.items()
        if lead in leads
    ]
    if totals:
        insert = upsert_insert(dialect, LEAD_TOTALS)
        columns = ("sequence", "total", "previous_total")
        await session.execute(
            insert.on_conflict_do_update(
                index_elements=["lead_id"], set_={c: insert.excluded[c] for c in columns}
            ),
            totals,
        )
    notices = [
        {"endpoint_id": e, "lead_id": lead, "total": t} for (e, lead), t in fanout.notices.items()
    ]
    if notices:
        insert = upsert_insert(dialect, SCORE_NOTICES)
        await session.execute(
            insert.on_conflict_do_update(
                index_elements=["endpoint_id", "lead_id"], set_={"total": insert.excluded.total}
            ),
            notices,
        )
    return taken


async def enabled_endpoints(session: AsyncSession) -> list[EndpointRow]:
    return list(await session.scalars(select(EndpointRow).where(EndpointRow.disabled_at.is_(None))))


@dataclass(frozen=True)
class Claimed:
    """A message taken for delivery, leased to this process until its outcome is written."""

    message_id: int
    endpoint_id: str
    webhook_id: str
    body: bytes
    attempts: int


CLAIMED_COLUMNS = (
    MESSAGES.c.message_id,
    MESSAGES.c.endpoint_id,
    MESSAGES.c.webhook_id,
    MESSAGES.c.body,
    MESSAGES.c.attempts,
)
"""What a :class:`Claimed` is read from."""


async def claim(
    sessions: async_sessionmaker[AsyncSession],
    rooms: Mapping[str, int],
    now: datetime,
    lease_until: datetime,
) -> list[Claimed]:
    """Up to ``rooms[e]`` due messages of each endpoint ``e``, the longest due first, in one
    statement: their next attempt is moved to ``lease_until``, so no one else takes them
    meanwhile, and a process killed with them leaves them due again when the lease ends.

    The UPDATE checks again that each message is still pending and due: on PostgreSQL
    a row another replica claimed first is re-read after its commit and left out (SQLite
    runs one writer at a time), so of two replicas claiming together each message goes
    to one.
    """
    wanted = {e: n for e, n in rooms.items() if n > 0}
    if not wanted:
        return []
    due = (MESSAGES.c.status == PENDING) & (MESSAGES.c.next_attempt_at <= now)
    ranked = (
        select(
            MESSAGES.c.message_id,
            MESSAGES.c.endpoint_id,
            func.row_number()
            .over(
                partition_by=MESSAGES.c.endpoint_id,
                order_by=(MESSAGES.c.next_attempt_at, MESSAGES.c.message_id),
            )
            .label("rank"),
        )
        .where(due, MESSAGES.c.endpoint_id.in_(wanted))
        .subquery()
    )
    chosen = select(ranked.c.message_id).where(
        ranked.c.rank <= case(wanted, value=ranked.c.endpoint_id, else_=0)
    )
    statement = (
        update(MESSAGES)
        .where(MESSAGES.c.message_id.in_(chosen), due)
        .values(next_attempt_at=lease_until)
        .returning(*CLAIMED_COLUMNS)
    )
    async with sessions() as session, session.begin():
        await _asynchronous_commit(session)
        rows = (await session.execute(statement)).all()
    claimed = [Claimed(*row) for row in rows]
    claimed.sort(key=lambda c: c.message_id)
    return claimed


async def _asynchronous_commit(session: AsyncSession) -> None:
    """On PostgreSQL, this transaction's commit does not wait for its WAL to reach the disk.

    For the writes whose loss in a crash of the database server only means a message
    posted again with the same webhook-id: a lease (the message is due again, another
    replica may take it) and an attempt's outcome (the message is still pending, and sent
    again). Such a crash loses at most the last moments' commits, never consistency, and a
    later synchronous commit (the consumer's messages, which must not be lost, keep the
    default) flushes the ones before it. The disk's flush was most of a claim's and of an
    outcome write's time, and a claim is on the way from a stored message to its post.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SET LOCAL synchronous_commit = off"))


async def extend(
    sessions: async_sessionmaker[AsyncSession], message_ids: Iterable[int], until: datetime
) -> None:
    """The lease of messages still held (waiting for a slot, or for their outcome)."""
    await _set_due(sessions, message_ids, until)


async def release(
    sessions: async_sessionmaker[AsyncSession], message_ids: Iterable[int], now: datetime
) -> None:
    """Messages claimed and not attempted (stopping, their endpoint disabled): due now."""
    await _set_due(sessions, message_ids, now)


async def _set_due(
    sessions: async_sessionmaker[AsyncSession], message_ids: Iterable[int], at: datetime
) -> None:
    ids = list(message_ids)
    if not ids:
        return
    async with sessions() as session, session.begin():
        await session.execute(
            update(MESSAGES)
            .where(MESSAGES.c.message_id.in_(ids), MESSAGES.c.status == PENDING)
            .values(next_attempt_at=at)
        )


@dataclass(frozen=True)
class AttemptResult:
    attempted_at: datetime
    outcome: str
    response_code: int | None
    latency_ms: float
    error: str | None


@dataclass(frozen=True)
class Outcome:
    """One attempt's result and the state it leaves its message in."""

    message_id: int
    result: AttemptResult
    status: str
    next_attempt_at: datetime | None
    disable_reason: str | None = None


ATTEMPTS: Table = AttemptRow.__table__  # type: ignore[assignment]
ENDPOINTS: Table = EndpointRow.__table__  # type: ignore[assignment]

_SETTLE = (
    update(MESSAGES)
    .where(MESSAGES.c.message_id == bindparam("m_id"))
    .values(
        attempts=MESSAGES.c.attempts + 1,
        status=bindparam("m_status"),
        next_attempt_at=bindparam("m_next", type_=UtcDateTime()),
        last_attempt_at=bindparam("m_at", type_=UtcDateTime()),
        # a replayed message keeps the time of its first delivery until it is delivered again
        delivered_at=func.coalesce(
            bindparam("m_delivered", type_=UtcDateTime()), MESSAGES.c.delivered_at
        ),
    )
)


async def record_attempts(
    sessions: async_sessionmaker[AsyncSession], outcomes: Sequence[Outcome]
) -> None:
    """The attempts, their messages' new states and (on a 410) endpoints disabled, in one
    transaction: what many deliveries that ended together cost is one round of statements.

    Nothing for a message gone meanwhile (its endpoint deleted, its lead erased).
    """
    if not outcomes:
        return
    async with sessions() as session, session.begin():
        await _asynchronous_commit(session)
        ids = [o.message_id for o in outcomes]
        present = set(
            await session.scalars(
                select(MessageRow.message_id)
                .where(MessageRow.message_id.in_(ids))
                .with_for_update()  # an erasure or a deletion waits for this transaction
            )
        )
        kept = [o for o in outcomes if o.message_id in present]
        if not kept:
            return
        await session.execute(
            _SETTLE,
            [
                {
                    "m_id": o.message_id,
                    "m_status": o.status,
                    "m_next": o.next_attempt_at,
                    "m_at": o.result.attempted_at,
                    "m_delivered": o.result.attempted_at if o.status == DELIVERED else None,
                }
                for o in kept
            ],
        )
        await session.execute(
            insert(ATTEMPTS),
            [
                {
                    "message_id": o.message_id,
                    "attempted_at": o.result.attempted_at,
                    "outcome": o.result.outcome,
                    "response_code": o.result.response_code,
                    "latency_ms": o.result.latency_ms,
                    "error": o.result.error,
                }
                for o in kept
            ],
        )
        for o in kept:
            if o.disable_reason is not None:
                endpoint = select(MessageRow.endpoint_id).where(
                    MessageRow.message_id == o.message_id
                )
                await session.execute(
                    update(EndpointRow)
                    .where(EndpointRow.endpoint_id == endpoint.scalar_subquery())
                    .values(disabled_at=o.result.attempted_at, disabled_reason=o.disable_reason)
                )


async def replay(
    session: AsyncSession,
    endpoint_id: str,
    now: datetime,
    *,
    message_id: int | None = None,
    since: datetime | None = None,
    status: str | None = None,
) -> int:
    """Make messages pending again, due now, with a fresh schedule; how many."""
    query = update(MessageRow).where(MessageRow.endpoint_id == endpoint_id)
    if message_id is not None:
        query = query.where(MessageRow.message_id == message_id)
    if since is not None:
        query = query.where(MessageRow.created_at >= since)
    if status is not None:
        query = query.where(MessageRow.status == status)
    result = await session.execute(query.values(status=PENDING, attempts=0, next_attempt_at=now))
    await session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


async def messages(
    session: AsyncSession, endpoint_id: str, *, status: str | None, after: int, limit: int
) -> list[MessageRow]:
    query = select(MessageRow).where(
        MessageRow.endpoint_id == endpoint_id, MessageRow.message_id > after
    )
    if status is not None:
        query = query.where(MessageRow.status == status)
    return list(await session.scalars(query.order_by(MessageRow.message_id).limit(limit)))


async def message(session: AsyncSession, endpoint_id: str, message_id: int) -> MessageRow | None:
    row = await session.get(MessageRow, message_id)
    return row if row is not None and row.endpoint_id == endpoint_id else None


async def attempts(session: AsyncSession, message_id: int) -> list[AttemptRow]:
    query = select(AttemptRow).where(AttemptRow.message_id == message_id)
    return list(await session.scalars(query.order_by(AttemptRow.attempt_id)))


async def delete_endpoint(session: AsyncSession, endpoint_id: str) -> bool:
    """The endpoint and its messages, attempts and notices, of leads and accounts (deleted
    here, not by cascade: SQLite cascades only with foreign keys on, and PostgreSQL bulk
    paths differ)."""
    if await session.get(EndpointRow, endpoint_id) is None:
        return False
    ids = select(MessageRow.message_id).where(MessageRow.endpoint_id == endpoint_id)
    await session.execute(delete(AttemptRow).where(AttemptRow.message_id.in_(ids)))
    await session.execute(delete(MessageRow).where(MessageRow.endpoint_id == endpoint_id))
    await session.execute(delete(ScoreNoticeRow).where(ScoreNoticeRow.endpoint_id == endpoint_id))
    await session.execute(
        delete(AccountNoticeRow).where(AccountNoticeRow.endpoint_id == endpoint_id)
    )
    await session.execute(delete(EndpointRow).where(EndpointRow.endpoint_id == endpoint_id))
    await session.commit()
    return True


@dataclass(frozen=True)
class Backlog:
    endpoint_id: str
    pending: int
    oldest: datetime | None


async def backlogs(session: AsyncSession) -> list[Backlog]:
    """Pending messages and the oldest one's creation, per endpoint (zero ones included)."""
    query = (
        select(
            EndpointRow.endpoint_id,
            func.count(MessageRow.message_id),
            func.min(MessageRow.created_at),
        )
        .select_from(EndpointRow)
        .outerjoin(
            MessageRow,
            (MessageRow.endpoint_id == EndpointRow.endpoint_id) & (MessageRow.status == PENDING),
        )
        .group_by(EndpointRow.endpoint_id)
    )
    result = await session.execute(query)
    return [Backlog(e, int(n), _aware(oldest)) for e, n, oldest in result.all()]


def _aware(value: datetime | str | None) -> datetime | None:
    """min() of a SQLite text column comes back as text, without the column's type."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def disabled_count(session: AsyncSession) -> int:
    query = (
        select(func.count()).select_from(EndpointRow).where(EndpointRow.disabled_at.is_not(None))
    )
    return int((await session.execute(query)).scalar_one())

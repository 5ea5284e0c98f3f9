"""Persistence of accounts: their roll-ups from ``leadflow.account-scores``, and the reads.

Writing (:func:`record_account_scores`) runs inside the transaction of
:func:`services.pipeline.store.record_batch`, so an account update is committed with the
batch's other records and before the consumer commits its offsets. Kafka delivers at
least once; writes are idempotent on ``(account_id, sequence)``: only a record newer
than the stored one changes the account and its contacts, so a redelivered or older
update changes nothing.

Contacts and reassignment. Each account's contacts are exactly those its newest record
lists (``account_contacts`` is keyed by account and lead): the listed ones are upserted
with the record's sequence, then one statement deletes the account's rows that carry an
older one. The records of two accounts live on different partitions, so while a contact
moves from A to B the pipeline may see B's record with it before A's record without it,
or, when A's partition lags, even A's older record with it after B's. Keeping each
account's list as its own newest record says makes the end state right in every order;
to show a contact under one account meanwhile, reads take the newest claim: the account
whose record listed it at the highest batch position (``claimed_position``, set when the
contact first appears under that account, kept while that account goes on listing it),
ties by the greater account id.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any, cast

from pydantic import JsonValue
from sqlalchemy import (
    Insert,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.pipeline.accounts_models import Account, AccountContact, AccountDetail
from services.pipeline.tables import AccountContactRow, AccountRow
from shared.account_events import AccountMember, AccountScore
from shared.database import upsert_insert

ACCOUNTS = cast(Table, AccountRow.__table__)
CONTACTS = cast(Table, AccountContactRow.__table__)

_ACCOUNT_COLUMNS = tuple(ACCOUNTS.c[name] for name in Account.model_fields)
_CONTACT_COLUMNS = tuple(CONTACTS.c[name] for name in AccountContact.model_fields)

NAME_TRAITS = ("name",)
DOMAIN_TRAITS = ("domain", "website")
"""The account traits shown as its name and domain: Segment's group-call trait names."""

MAX_TRAIT_TEXT = 256
MAX_ACCOUNT_ID = 256
"""The account id column's length; scoring names no longer account."""

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


# --- writing ---------------------------------------------------------------------------


def require_storable(score: AccountScore) -> None:
    """``ValueError`` for what the database would refuse or store wrongly: the consumer
    sends such a record to the dead letters, where retrying the batch would block the
    loop for good. A non-finite number (SQLite would store NaN as NULL and break the
    listing's order), an id longer than its column or with a control character (NUL:
    PostgreSQL's text cannot hold it), a NUL in the traits (nor can its JSONB)."""
    named = f"account score {score.account_id[:MAX_ACCOUNT_ID]!r}#{score.sequence}"
    numbers = [score.fit, score.contact_total_sum, score.total]
    numbers += [] if score.contact_total_max is None else [score.contact_total_max]
    numbers += [n for m in score.members for n in (m.fit, m.engagement, m.total)]
    if not all(map(math.isfinite, numbers)):
        raise ValueError(f"{named} is not finite")
    if not 0 < len(score.account_id) <= MAX_ACCOUNT_ID or _CONTROL_CHARS.search(score.account_id):
        raise ValueError(f"{named}: the account id is empty, too long or has control characters")
    if any(_CONTROL_CHARS.search(member.lead_id) for member in score.members):
        raise ValueError(f"{named}: a member's lead id has control characters")
    if _holds_nul(score.traits):
        raise ValueError(f"{named}: a trait holds a NUL character")


def _holds_nul(value: JsonValue) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def newest_per_account(scores: Iterable[AccountScore]) -> list[AccountScore]:
    """The highest-sequence record of each account (the first seen on a tie), by id."""
    newest: dict[str, AccountScore] = {}
    for score in scores:
        held = newest.get(score.account_id)
        if held is None or score.sequence > held.sequence:
            newest[score.account_id] = score
    return [newest[account_id] for account_id in sorted(newest)]


async def record_account_scores(
    session: AsyncSession,
    dialect: str,
    scores: Sequence[AccountScore],
    now: datetime,
    position: int,
    execute: Callable[[Insert, list[dict[str, Any]]], Awaitable[None]],
) -> None:
    """Apply each account's newest record, if newer than the stored one; in the caller's
    transaction, inside the writers' serialisation (see ``record_batch``). ``execute`` runs
    one statement over many plain rows (``record_batch``'s, asyncpg's own on PostgreSQL)."""
    newest = newest_per_account(scores)
    if not newest:
        return
    known = await session.execute(
        select(ACCOUNTS.c.account_id, ACCOUNTS.c.sequence).where(
            ACCOUNTS.c.account_id.in_([score.account_id for score in newest])
        )
    )
    stored = {account_id: sequence for account_id, sequence in known}
    fresh = [score for score in newest if score.sequence > stored.get(score.account_id, -1)]
    if not fresh:
        return
    await session.execute(_accounts(dialect), [_account_row(s, now, position) for s in fresh])
    rows = [_contact_row(score, member, position) for score in fresh for member in _unique(score)]
    if rows:
        await execute(_contacts(dialect), rows)
    # every contact still listed now carries its account's new sequence: sweep the rest
    await session.execute(
        delete(CONTACTS).where(
            CONTACTS.c.account_id.in_([score.account_id for score in fresh]),
            CONTACTS.c.account_sequence
            < select(ACCOUNTS.c.sequence)
            .where(ACCOUNTS.c.account_id == CONTACTS.c.account_id)
            .scalar_subquery(),
        )
    )


async def forget_contacts(session: AsyncSession, lead_id: str) -> None:
    """An erased lead's places in accounts: no table may keep its id (§5.8). The account's
    own numbers follow with its next record, which scoring sends as the lead leaves."""
    await session.execute(delete(CONTACTS).where(CONTACTS.c.lead_id == lead_id))


def _unique(score: AccountScore) -> list[AccountMember]:
    """The members, each lead once (the first): one statement cannot upsert a row twice."""
    first: dict[str, AccountMember] = {}
    for member in score.members:
        first.setdefault(member.lead_id, member)
    return list(first.values())


@cache
def _accounts(dialect: str) -> postgresql.Insert | sqlite.Insert:
    insert = upsert_insert(dialect, ACCOUNTS)
    new = insert.excluded
    return insert.on_conflict_do_update(
        index_elements=[ACCOUNTS.c.account_id],
        set_={column.name: new[column.name] for column in ACCOUNTS.c if not column.primary_key},
        where=new.sequence > ACCOUNTS.c.sequence,
    )


@cache
def _contacts(dialect: str) -> postgresql.Insert | sqlite.Insert:
    """A listed contact's score now; its claim keeps the position it was first listed at."""
    insert = upsert_insert(dialect, CONTACTS)
    new = insert.excluded
    return insert.on_conflict_do_update(
        index_elements=[CONTACTS.c.account_id, CONTACTS.c.lead_id],
        set_={
            name: new[name]
            for name in ("stage", "fit", "engagement", "total", "engaged", "account_sequence")
        },
    )


def _trait_text(traits: dict[str, JsonValue], names: Sequence[str]) -> str | None:
    for name in names:
        value = traits.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()[:MAX_TRAIT_TEXT]
    return None


def _account_row(score: AccountScore, now: datetime, position: int) -> dict[str, Any]:
    return {
        "account_id": score.account_id,
        "name": _trait_text(score.traits, NAME_TRAITS),
        "domain": _trait_text(score.traits, DOMAIN_TRAITS),
        "fit": score.fit,
        "contacts": score.contacts,
        "engaged_contacts": score.engaged_contacts,
        "contact_total_sum": score.contact_total_sum,
        "contact_total_max": score.contact_total_max,
        "total": score.total,
        "as_of": score.as_of,
        "model_version": score.model_version,
        "sequence": score.sequence,
        "traits": score.traits,
        "breakdown": [item.model_dump(mode="json") for item in score.breakdown],
        "members_truncated": score.members_truncated,
        "updated_at": now,
        "change_position": position,
    }


def _contact_row(score: AccountScore, member: AccountMember, position: int) -> dict[str, Any]:
    return {
        "account_id": score.account_id,
        "lead_id": member.lead_id,
        "stage": member.stage.value,
        "fit": member.fit,
        "engagement": member.engagement,
        "total": member.total,
        "engaged": member.engaged,
        "account_sequence": score.sequence,
        "claimed_position": position,
    }


# --- reading ---------------------------------------------------------------------------


async def list_accounts(
    session: AsyncSession,
    *,
    min_score: float | None = None,
    limit: int = 100,
    cursor: tuple[float, str] | None = None,
) -> tuple[list[Account], tuple[float, str] | None]:
    """Accounts by total, highest first, ties by id; keyset-paginated as the leads are.

    Takes and returns the cursor decoded, the last row's ``(total, account_id)``; the
    route encodes it with the leads' cursor format.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    accounts = ACCOUNTS.c
    query = (
        select(*_ACCOUNT_COLUMNS)
        .order_by(accounts.total.desc(), accounts.account_id)
        .limit(limit + 1)
    )
    if min_score is not None:
        query = query.where(accounts.total >= min_score)
    if cursor is not None:
        total, account_id = cursor
        query = query.where(
            or_(
                accounts.total < total,
                and_(accounts.total == total, accounts.account_id > account_id),
            )
        )
    rows = list((await session.execute(query)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    items = [Account.model_validate(row, from_attributes=True) for row in rows]
    return items, (rows[-1].total, rows[-1].account_id) if more else None


async def changed_accounts(
    session: AsyncSession,
    *,
    after: tuple[int, str] | None,
    min_score: float | None = None,
    limit: int = 100,
) -> tuple[list[Account], tuple[int, str] | None]:
    """Accounts written since ``after`` (``None``: from the first), in the order written.

    By ``(change_position, account_id)``, the positions the leads' feed uses, so an
    account written again moves past every cursor handed out (see ``changed_leads``).
    Returns the last row's pair, ``None`` for an empty page.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    accounts = ACCOUNTS.c
    query = (
        select(*_ACCOUNT_COLUMNS, accounts.change_position)
        .order_by(accounts.change_position, accounts.account_id)
        .limit(limit)
    )
    if after is not None:
        position, account_id = after
        query = query.where(
            tuple_(accounts.change_position, accounts.account_id)
            > tuple_(literal(position), literal(account_id))
        )
    if min_score is not None:
        query = query.where(accounts.total >= min_score)
    rows = list((await session.execute(query)).all())
    items = [Account.model_validate(row, from_attributes=True) for row in rows]
    return items, (rows[-1].change_position, rows[-1].account_id) if rows else None


def _contacts_of_query() -> Select[Any]:
    """An account's contacts whose newest claim is that account; built once."""
    mine, other = CONTACTS.c, CONTACTS.alias("other")
    newer_claim = exists().where(
        other.c.lead_id == mine.lead_id,
        other.c.account_id != mine.account_id,
        or_(
            other.c.claimed_position > mine.claimed_position,
            and_(
                other.c.claimed_position == mine.claimed_position,
                other.c.account_id > mine.account_id,
            ),
        ),
    )
    return (
        select(*_CONTACT_COLUMNS)
        .where(mine.account_id == bindparam("account_id"), ~newer_claim)
        .order_by(mine.total.desc(), mine.lead_id)
    )


_CONTACTS_OF = _contacts_of_query()
_ACCOUNT = select(ACCOUNTS).where(ACCOUNTS.c.account_id == bindparam("account_id"))


async def get_account(session: AsyncSession, account_id: str) -> AccountDetail | None:
    """The account with the contacts whose newest claim is this account (module docstring)."""
    row = (await session.execute(_ACCOUNT, {"account_id": account_id})).first()
    if row is None:
        return None
    contacts = (await session.execute(_CONTACTS_OF, {"account_id": account_id})).all()
    return AccountDetail.model_validate(
        {
            **{name: getattr(row, name) for name in Account.model_fields},
            "traits": row.traits,
            "breakdown": row.breakdown,
            "members": [AccountContact.model_validate(c, from_attributes=True) for c in contacts],
            "members_truncated": row.members_truncated,
        }
    )

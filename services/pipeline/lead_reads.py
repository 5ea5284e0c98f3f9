"""Reading leads valued at a moment: ``GET /v1/leads`` (score order and change order) and
``GET /v1/leads/{id}``.

A lead's row keeps its score as of its latest event; what the API shows is that score with
the engagement decayed to the moment asked for (:mod:`services.pipeline.decay`). The score
order is by that value, so it cannot be one index range: it is a merge. Leads that share
fit, decay rate and sign (a *group*) keep one order at every moment, and each group is
one range of ``ix_leads_[stage_]decay_groups``, read in chunks; the leads whose latest
event is after the moment (valued as stored) are one more range, by stored total. The
merge takes the best head of every range until the page is full. Groups are few (fit
takes few values), found by a skip scan on PostgreSQL.

SQL narrows each range with bounds a little wider than exact (a logarithm computed here
and a comparison there may differ in the last bit); the exact tests are made here, on the
values computed here, which are also the values shown. A page's cursor holds the moment
it was valued at, so every page of one listing is valued alike.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    literal,
    literal_column,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.pipeline.api_models import Lead, LeadPage
from services.pipeline.decay import StoredEngagement, decayed, log2_at_least
from services.pipeline.store import (
    START_OF_CHANGES,
    InvalidCursor,
    decode_change_cursor,
    encode_change_cursor,
)
from services.pipeline.tables import LeadRow
from shared.events import Stage, format_time

LEADS = cast(Table, LeadRow.__table__)
C = LEADS.c
COLUMNS = (
    C.lead_id, C.stage, C.fit, C.engagement, C.total, C.as_of, C.model_version, C.updated_at,
    C.decay_rate, C.decay_sign, C.decay_log2,
)  # fmt: skip
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
MARGIN = 1e-9
"""How much wider than exact the SQL bounds of a group are, in log2 units."""
FIRST_CHUNK = 24
"""Rows read from each range at first: most pages come from a few groups."""


def valued(row: Any, at: datetime) -> tuple[float, float]:
    """The engagement and total of ``row`` valued at ``at`` (see the module)."""
    stored = StoredEngagement(row.decay_rate, row.decay_sign, row.decay_log2)
    engagement = decayed(row.engagement, row.as_of, stored, at)
    return engagement, row.total if engagement == row.engagement else row.fit + engagement


def value(row: Any, at: datetime) -> Lead:
    """The lead of ``row`` valued at ``at``."""
    engagement, total = valued(row, at)
    valued_at = at if row.as_of is None or at >= row.as_of else row.as_of
    return Lead(
        lead_id=row.lead_id,
        stage=row.stage,
        fit=row.fit,
        engagement=engagement,
        total=total,
        as_of=row.as_of,
        model_version=row.model_version,
        updated_at=row.updated_at,
        valued_at=valued_at,
    )


async def get_lead(session: AsyncSession, lead_id: str, at: datetime) -> Lead | None:
    row = (await session.execute(select(*COLUMNS).where(C.lead_id == lead_id))).first()
    return None if row is None else value(row, at)


# --- score order -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Group:
    fit: float
    rate: float
    sign: int


@dataclass(frozen=True, slots=True)
class Listing:
    """What one score-ordered page asks for."""

    at: datetime
    stage: Stage | None
    min_score: float | None
    after: tuple[float, str] | None
    """The cursor's (total, lead_id): the page starts after it."""

    def wanted(self, total: float, lead_id: str) -> bool:
        if self.min_score is not None and total < self.min_score:
            return False
        return self.after is None or (-total, lead_id) > (-self.after[0], self.after[1])


@dataclass
class Range:
    """One ordered range of the merge: a group's leads, or the leads valued as stored."""

    group: Group | None
    exhausted: bool = False
    last: tuple[float, str] | None = None
    """The range's own key of the last row read (its ``decay_log2`` or total, lead_id)."""
    rows: list[tuple[float, Any]] = field(default_factory=list)
    """The rows read and wanted, not yet merged, each with its valued total."""


async def list_leads(
    session: AsyncSession,
    at: datetime,
    *,
    stage: Stage | None = None,
    min_score: float | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> LeadPage:
    """Leads by total valued at ``at`` (the cursor's moment when given), highest first,
    ties by ``lead_id``. Raises :class:`InvalidCursor` for a cursor this did not issue."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    after = None
    if cursor is not None:
        at, total, lead_id = decode_cursor(cursor)
        after = (total, lead_id)
    listing = Listing(at, stage, min_score, after)
    if session.get_bind().dialect.name == "postgresql":
        # Planned for the values at hand: a generic plan of a prepared statement (asyncpg
        # prepares them, PostgreSQL switches to one after five runs) cannot know that
        # `as_of > now` selects almost nothing, and walks the whole total index instead.
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    ranges = [Range(None), *(Range(g) for g in await _groups(session, stage))]
    page: list[Lead] = []
    async for lead in _merge(session, listing, ranges, limit + 1):
        page.append(lead)
    more = len(page) > limit
    page = page[:limit]
    last = page[-1] if page else None
    return LeadPage(
        items=page,
        next_cursor=encode_cursor(at, last.total, last.lead_id) if more and last else None,
    )


async def _merge(
    session: AsyncSession, listing: Listing, ranges: list[Range], wanted: int
) -> AsyncIterator[Lead]:
    """The wanted leads in page order: a k-way merge of the ranges, refilling each on use."""
    heap: list[tuple[float, str, int]] = []
    for index, chunk in enumerate(await _first_chunks(session, listing, ranges)):
        _take(ranges[index], chunk, listing, FIRST_CHUNK)
        _push(heap, ranges, index)
    given = 0
    while heap and given < wanted:
        _, _, index = heapq.heappop(heap)
        source = ranges[index]
        _, row = source.rows.pop(0)
        yield value(row, listing.at)
        given += 1
        if not source.rows and not source.exhausted:
            params = _params(listing, source, "0", wanted)
            if params is None:
                source.exhausted = True
            else:
                statement = _statement((_kind(source),), listing.stage is not None)
                rows = (await session.execute(statement, params)).all()
                _take(source, sorted(rows, key=_order_key(source)), listing, wanted)
        _push(heap, ranges, index)


def _push(heap: list[tuple[float, str, int]], ranges: list[Range], index: int) -> None:
    rows = ranges[index].rows
    if rows:
        total, row = rows[0]
        heapq.heappush(heap, (-total, row.lead_id, index))


def _take(source: Range, rows: Any, listing: Listing, asked: int) -> None:
    """Keep the rows the listing wants, in order; a row below ``min_score`` ends the range
    (the rows after it are lower still)."""
    rows = list(rows)
    source.exhausted = len(rows) < asked
    for row in rows:
        source.last = (row.total if source.group is None else row.decay_log2, row.lead_id)
        _, total = valued(row, listing.at)
        if listing.min_score is not None and total < listing.min_score:
            source.exhausted = True
            return
        if listing.wanted(total, row.lead_id):
            source.rows.append((total, row))


async def _first_chunks(
    session: AsyncSession, listing: Listing, ranges: list[Range]
) -> list[list[Row[Any]]]:
    """Every range's first chunk in one round trip: a UNION ALL, each part tagged with its
    place in it, built once per shape (the kinds of its parts) and then only bound."""
    included: list[int] = []
    params: dict[str, Any] = {}
    for index, source in enumerate(ranges):
        bound = _params(listing, source, str(len(included)), FIRST_CHUNK)
        if bound is None:
            source.exhausted = True
            continue
        included.append(index)
        params.update(bound)
    chunks: list[list[Row[Any]]] = [[] for _ in ranges]
    if not included:
        return chunks
    kinds = tuple(_kind(ranges[index]) for index in included)
    statement = _statement(kinds, listing.stage is not None)
    for row in (await session.execute(statement, params)).all():
        chunks[included[row.part]].append(row)
    for index, chunk in enumerate(chunks):
        chunk.sort(key=_order_key(ranges[index]))
    return chunks


def _kind(source: Range) -> str:
    """Which statement a range reads with: its group's sign decides its order."""
    if source.group is None:
        return "stored"
    return {1: "up", -1: "down", 0: "flat"}[source.group.sign]


INFINITY = float("inf")


def _params(listing: Listing, source: Range, part: str, limit: int) -> dict[str, Any] | None:
    """The values of a range's bind parameters (named ``<name>_<part>``), or ``None`` when
    no row of the range can be wanted. Absent bounds are infinities: one statement
    serves every listing of a shape."""
    values: dict[str, Any] = {"at": listing.at, "limit": limit}
    if listing.stage is not None:
        values["stage"] = listing.stage.value
    group = source.group
    if group is None:
        start = source.last or listing.after
        values["floor"] = -INFINITY if listing.min_score is None else listing.min_score
        values["after_total"], values["after_id"] = start or (INFINITY, "")
    else:
        bounds = _log2_bounds(listing, group)
        if bounds is None:
            return None
        low, high = bounds
        values.update(fit=group.fit, rate=group.rate, sign=group.sign)
        values["low"] = -INFINITY if low is None else low - MARGIN
        values["high"] = INFINITY if high is None else high + MARGIN
        first = (INFINITY if group.sign > 0 else -INFINITY, "")
        values["last_log2"], values["last_id"] = source.last or first
    return {f"{name}_{part}": value for name, value in values.items()}


@lru_cache(maxsize=256)
def _statement(kinds: tuple[str, ...], staged: bool) -> Any:
    """The statement reading one chunk of each range of ``kinds`` (see :func:`_params`)."""
    parts = [_part(kind, staged, str(index)) for index, kind in enumerate(kinds)]
    if len(parts) == 1:
        return parts[0]
    tagged = [
        select(literal_column(str(index)).label("part"), *part.subquery().c)
        for index, part in enumerate(parts)
    ]
    return tagged[0].union_all(*tagged[1:])


def _part(kind: str, staged: bool, part: str) -> Select[Any]:
    def param(name: str) -> Any:
        return bindparam(f"{name}_{part}")

    conditions: list[ColumnElement[bool]] = [C.stage == param("stage")] if staged else []
    if kind == "stored":
        after_total, after_id = param("after_total"), param("after_id")
        conditions += [
            C.as_of > param("at"),
            C.total >= param("floor"),
            C.total <= after_total,
            or_(C.total < after_total, and_(C.total == after_total, C.lead_id > after_id)),
        ]
        order: list[Any] = [C.total.desc(), C.lead_id]
    else:
        log2, last_log2, last_id = C.decay_log2, param("last_log2"), param("last_id")
        conditions += [
            C.fit == param("fit"),
            C.decay_rate == param("rate"),
            C.decay_sign == param("sign"),
            or_(C.as_of.is_(None), C.as_of <= param("at")),
            log2 >= param("low"),
            log2 <= param("high"),
        ]
        if kind == "up":
            conditions += [
                log2 <= last_log2,
                or_(log2 < last_log2, and_(log2 == last_log2, C.lead_id > last_id)),
            ]
            order = [log2.desc(), C.lead_id]
        elif kind == "down":
            conditions += [
                log2 >= last_log2,
                or_(log2 > last_log2, and_(log2 == last_log2, C.lead_id > last_id)),
            ]
            order = [log2, C.lead_id]
        else:
            conditions.append(C.lead_id > last_id)
            order = [C.lead_id]
    return select(*COLUMNS).where(*conditions).order_by(*order).limit(param("limit"))


def _order_key(source: Range) -> Any:
    """The order of a range's rows, as SQL sorts them (a UNION ALL keeps no order)."""
    group = source.group
    if group is None:
        return lambda row: (-row.total, row.lead_id)
    if group.sign > 0:
        return lambda row: (-row.decay_log2, row.lead_id)
    if group.sign < 0:
        return lambda row: (row.decay_log2, row.lead_id)
    return lambda row: row.lead_id


def _log2_bounds(listing: Listing, group: Group) -> tuple[float | None, float | None] | None:
    """The ``decay_log2`` range (low, high) of a group's wanted rows, ``None`` for none.

    A row's total at ``at`` is ``fit + sign * 2 ** (log2 - rate * t)``: at least
    ``min_score``, and at most the cursor's total (ties go on by lead id).
    """
    low: float | None = None
    high: float | None = None
    for bound, is_floor in ((listing.min_score, True), (_cursor_total(listing), False)):
        if bound is None:
            continue
        narrowed = _log2_range(bound - group.fit, is_floor, group, listing.at)
        if narrowed is None:
            return None
        bound_low, bound_high = narrowed
        low = low if bound_low is None else _max(low, bound_low)
        high = high if bound_high is None else _min(high, bound_high)
    return low, high


def _log2_range(
    room: float, is_floor: bool, group: Group, at: datetime
) -> tuple[float | None, float | None] | None:
    """The ``decay_log2`` range of the rows whose engagement is at least (a floor) or at
    most (the cursor) ``room``, the distance of the bound from the group's fit; ``None``
    when no row of the group can be in it."""
    if group.sign == 0:  # no engagement: every row's total is its fit
        return (None, None) if (room <= 0 if is_floor else room >= 0) else None
    if group.sign > 0:
        if is_floor:
            return (log2_at_least(room, group.rate, at), None) if room > 0 else (None, None)
        # every row is above its fit, so above a cursor's total at or below it
        return (None, log2_at_least(room, group.rate, at)) if room > 0 else None
    if is_floor:
        return (None, log2_at_least(-room, group.rate, at)) if room < 0 else None
    return (log2_at_least(-room, group.rate, at), None) if room < 0 else (None, None)


def _cursor_total(listing: Listing) -> float | None:
    return None if listing.after is None else listing.after[0]


def _max(a: float | None, b: float) -> float:
    return b if a is None else max(a, b)


def _min(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


SKIP_SCAN = """
WITH RECURSIVE found(fit, decay_rate, decay_sign) AS (
    (SELECT fit, decay_rate, decay_sign FROM leads {where}
     ORDER BY fit, decay_rate, decay_sign LIMIT 1)
    UNION ALL
    SELECT step.fit, step.decay_rate, step.decay_sign FROM found, LATERAL (
        SELECT fit, decay_rate, decay_sign FROM leads
        WHERE (fit, decay_rate, decay_sign) > (found.fit, found.decay_rate, found.decay_sign)
        {and_where}
        ORDER BY fit, decay_rate, decay_sign LIMIT 1
    ) AS step
)
SELECT fit, decay_rate, decay_sign FROM found
"""
"""PostgreSQL has no skip scan of its own: one index probe per group, in one statement."""


async def _groups(session: AsyncSession, stage: Stage | None) -> list[Group]:
    """The (fit, rate, sign) triples present, of ``stage``'s leads when given."""
    if session.get_bind().dialect.name != "postgresql":
        key = (C.fit, C.decay_rate, C.decay_sign)
        where = [] if stage is None else [C.stage == stage.value]
        query = select(*key).where(*where).distinct()
        return [Group(*row) for row in (await session.execute(query)).all()]
    if stage is None:
        statement = text(SKIP_SCAN.format(where="", and_where=""))
        rows = await session.execute(statement)
    else:
        statement = text(
            SKIP_SCAN.format(where="WHERE stage = :stage", and_where="AND stage = :stage")
        )
        rows = await session.execute(statement, {"stage": stage.value})
    return [Group(*row) for row in rows.all()]


def encode_cursor(at: datetime, total: float, lead_id: str) -> str:
    """Opaque to clients: the moment the listing is valued at, and the last row's key."""
    raw = json.dumps(
        ["at", format_time(at), total, lead_id], separators=(",", ":"), allow_nan=False
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, float, str]:
    """What :func:`encode_cursor` put in; anything else is refused (:class:`InvalidCursor`)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        match json.loads(raw):
            case ["at", str() as at, int() | float() as total, str() as lead_id] if not isinstance(
                total, bool
            ):
                moment = datetime.fromisoformat(at)
                number = float(total)
                lead_id.encode()
                if moment.tzinfo and math.isfinite(number) and not CONTROL_CHARS.search(lead_id):
                    return moment, number, lead_id
    except (binascii.Error, ValueError, OverflowError, RecursionError) as exc:
        raise InvalidCursor("is not one this API issued") from exc
    raise InvalidCursor("is not one this API issued")


# --- change order ----------------------------------------------------------------------------


async def changed_leads(
    session: AsyncSession,
    at: datetime,
    *,
    updated_after: str,
    stage: Stage | None = None,
    min_score: float | None = None,
    limit: int = 100,
) -> LeadPage:
    """Leads written since ``updated_after``, in the order written (a sync job's listing),
    valued at ``at``. ``min_score`` applies to the valued total, so it is tested here:
    rows are read on until the page is full or none is left. An empty page returns the
    cursor it was given. Raises :class:`InvalidCursor` for a cursor this did not issue."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    start: tuple[int, str] | None = None
    if updated_after != START_OF_CHANGES:
        start = decode_change_cursor(updated_after)
    page: list[tuple[Lead, int]] = []
    while len(page) < limit:
        query = select(*COLUMNS, C.change_position).order_by(C.change_position, C.lead_id)
        if start is not None:
            position, lead_id = start
            query = query.where(
                tuple_(C.change_position, C.lead_id) > tuple_(literal(position), literal(lead_id))
            )
        if stage is not None:
            query = query.where(C.stage == stage.value)
        chunk = (await session.execute(query.limit(limit))).all()
        for row in chunk:
            lead = value(row, at)
            if min_score is None or lead.total >= min_score:
                page.append((lead, row.change_position))
        if len(chunk) < limit:
            break
        start = (chunk[-1].change_position, chunk[-1].lead_id)
    page = page[:limit]
    if not page:
        return LeadPage(items=[], next_cursor=updated_after)
    last, position = page[-1]
    return LeadPage(
        items=[lead for lead, _ in page],
        next_cursor=encode_change_cursor(position, last.lead_id),
    )

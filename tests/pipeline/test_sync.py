"""Polling sync (``GET /v1/leads?updated_after=``), on SQLite and PostgreSQL alike.

A CRM that cannot take webhooks pages the change-ordered listing with its cursor; it must
end with every lead's latest state however its pages interleave with the writers.
"""

from __future__ import annotations

import asyncio
import random

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline import lead_reads, store
from services.pipeline.api_models import Lead, LeadPage
from shared.erasure_signals import ErasureSignal
from shared.events import Stage
from tests.pipeline.records import READ_AT, score_update, stage_change

Sessions = async_sessionmaker[AsyncSession]
LEADS = [f"lead-{n}@example.com" for n in range(40)]


async def page(
    sessions: Sessions,
    updated_after: str,
    limit: int = 7,
    stage: Stage | None = None,
    min_score: float | None = None,
) -> LeadPage:
    async with sessions() as session:
        return await lead_reads.changed_leads(
            session,
            READ_AT,
            updated_after=updated_after,
            limit=limit,
            stage=stage,
            min_score=min_score,
        )


async def current(sessions: Sessions) -> dict[str, Lead]:
    async with sessions() as session:
        listing = await lead_reads.list_leads(session, READ_AT, limit=10_000)
    return {lead.lead_id: lead for lead in listing.items}


async def test_a_sync_loop_paging_while_writers_write_ends_with_every_latest_state(
    sessions: Sessions,
) -> None:
    sequences = dict.fromkeys(LEADS, 0)
    mirror: dict[str, Lead] = {}
    seen: set[tuple[str, object]] = set()
    writing = True

    async def writer(batches: int, chosen: random.Random) -> None:
        for _ in range(batches):
            updates = []
            for lead_id in chosen.sample(LEADS, 5):
                sequences[lead_id] += 1
                total = float(chosen.randint(0, 100))
                updates.append(score_update(lead_id, sequences[lead_id], total))
            await store.record_batch(sessions, [], updates)

    async def sync_once(cursor: str) -> str:
        """One run of a sync job: pages until an empty page; returns the cursor to keep."""
        while True:
            got = await page(sessions, cursor)
            for lead in got.items:
                assert (lead.lead_id, lead.updated_at) not in seen, "a change was read twice"
                seen.add((lead.lead_id, lead.updated_at))
                mirror[lead.lead_id] = lead
            assert got.next_cursor is not None
            if not got.items:
                assert got.next_cursor == cursor
                return cursor
            cursor = got.next_cursor
            await asyncio.sleep(0)  # let the writers in between pages

    async def syncing() -> str:
        cursor = store.START_OF_CHANGES
        while writing:
            cursor = await sync_once(cursor)
        return await sync_once(cursor)  # the last run, after the writers stopped

    job = asyncio.create_task(syncing())
    # Two writers at once: on PostgreSQL they take turns on the advisory lock.
    await asyncio.gather(writer(40, random.Random(1)), writer(40, random.Random(2)))
    writing = False
    await job

    expected = await current(sessions)
    assert len(expected) == len(LEADS)
    assert mirror == expected


async def test_pages_follow_write_order_and_a_lead_written_again_comes_back(
    sessions: Sessions,
) -> None:
    await store.record_batch(sessions, [], [score_update(lead, 1, 10.0) for lead in LEADS[:3]])
    await store.record_batch(sessions, [stage_change(LEADS[3], 1, Stage.LEAD)], [])
    first = await page(sessions, store.START_OF_CHANGES, limit=10)
    assert [lead.lead_id for lead in first.items] == LEADS[:4]  # one batch: by lead id
    assert first.next_cursor is not None

    await store.record_batch(sessions, [], [score_update(LEADS[0], 2, 55.0, Stage.PROSPECT)])
    again = await page(sessions, first.next_cursor)
    assert [(lead.lead_id, lead.total, lead.stage) for lead in again.items] == [
        (LEADS[0], 55.0, Stage.PROSPECT)
    ]
    # redelivering an old record writes nothing, so nothing comes back
    assert again.next_cursor is not None
    await store.record_batch(sessions, [], [score_update(LEADS[1], 1, 10.0)])
    assert (await page(sessions, again.next_cursor)).items == []


async def test_erasing_the_newest_lead_never_lets_its_position_be_handed_out_again(
    sessions: Sessions,
) -> None:
    await store.record_batch(sessions, [], [score_update(LEADS[0], 1, 10.0)])
    await store.record_batch(sessions, [], [score_update(LEADS[9], 1, 10.0)])
    synced = await page(sessions, store.START_OF_CHANGES)
    assert [lead.lead_id for lead in synced.items] == [LEADS[0], LEADS[9]]
    assert synced.next_cursor is not None

    await store.record_batch(sessions, [], [], [ErasureSignal(LEADS[9], "scores")])
    await store.record_batch(sessions, [], [score_update(LEADS[5], 1, 10.0)])
    after = await page(sessions, synced.next_cursor)
    assert [lead.lead_id for lead in after.items] == [LEADS[5]]
    assert LEADS[9] not in {lead.lead_id for lead in (await page(sessions, "0")).items}


async def test_filters_select_among_the_changed_leads(sessions: Sessions) -> None:
    await store.record_batch(
        sessions,
        [],
        [
            score_update(LEADS[0], 1, 90.0, Stage.OPPORTUNITY),
            score_update(LEADS[1], 1, 20.0),
            score_update(LEADS[2], 1, 70.0, Stage.OPPORTUNITY),
        ],
    )
    start = store.START_OF_CHANGES
    by_stage = await page(sessions, start, stage=Stage.OPPORTUNITY)
    assert [lead.lead_id for lead in by_stage.items] == [LEADS[0], LEADS[2]]
    high = await page(sessions, start, min_score=80.0)
    assert [lead.lead_id for lead in high.items] == [LEADS[0]]


async def test_the_api_pages_by_cursor_and_an_empty_page_keeps_it(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    empty = (await client.get("/v1/leads", params={"updated_after": "0"})).json()
    assert empty == {"items": [], "next_cursor": "0"}

    await store.record_batch(sessions, [], [score_update(lead, 1, 10.0) for lead in LEADS[:5]])
    cursor, ids = "0", []
    while True:
        body = (await client.get("/v1/leads", params={"updated_after": cursor, "limit": 2})).json()
        ids += [lead["lead_id"] for lead in body["items"]]
        if not body["items"]:
            assert body["next_cursor"] == cursor
            break
        cursor = body["next_cursor"]
    assert ids == LEADS[:5]


async def test_a_malformed_cursor_is_a_422_naming_the_field(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    await store.record_batch(sessions, [], [score_update(lead, 1, 10.0) for lead in LEADS[:3]])
    score_cursor = (await client.get("/v1/leads", params={"limit": 1})).json()["next_cursor"]
    for value in ("", "%%%", "W1=", "nope", "W1", score_cursor):
        response = await client.get("/v1/leads", params={"updated_after": value})
        assert response.status_code == 422, value
        (error,) = response.json()["detail"]
        assert error["loc"] == ["query", "updated_after"]
    # base64 as issued, but not of a change cursor: the reason says so
    assert "is not one this API issued" in error["msg"]

    change_cursor = (
        await client.get("/v1/leads", params={"updated_after": "0", "limit": 1})
    ).json()["next_cursor"]
    both = await client.get(
        "/v1/leads", params={"updated_after": change_cursor, "cursor": score_cursor}
    )
    assert both.status_code == 422
    assert both.json()["detail"][0]["loc"] == ["query", "cursor"]
    # and a change cursor is no score-order cursor either
    crossed = await client.get("/v1/leads", params={"cursor": change_cursor})
    assert crossed.status_code == 422


def test_the_longest_cursor_fits_the_query_parameter() -> None:
    """A lead id of 256 four-byte characters, quotes and backslashes, at the last position."""
    for lead_id in ("\U0001d538" * 256, '"\\' * 128):
        cursor = store.encode_change_cursor(store.MAX_CHANGE_POSITION, lead_id)
        assert len(cursor) <= 2048
        assert store.decode_change_cursor(cursor) == (store.MAX_CHANGE_POSITION, lead_id)

"""Erasing a lead in the store, on SQLite and PostgreSQL: every row goes, in one
transaction with the batch, idempotently; the request keeps only a hash of the id."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline import lead_reads, store
from shared.database import Database
from shared.erasure_signals import ErasureSignal
from shared.events import Stage
from tests.pipeline.records import READ_AT, score_update, snapshot, stage_change, tables_holding

Sessions = async_sessionmaker[AsyncSession]

ADA, BOB = "ada@example.com", "bob@example.org"
REQUESTED = datetime(2026, 12, 1, 8, tzinfo=UTC)


async def seed(sessions: Sessions) -> None:
    await store.record_batch(
        sessions,
        [
            stage_change(ADA, 1, Stage.LEAD),
            stage_change(ADA, 2, Stage.PROSPECT, Stage.LEAD),
            stage_change(BOB, 1, Stage.LEAD),
        ],
        [score_update(ADA, 3, 72.5, Stage.PROSPECT), score_update(BOB, 1, 12.0)],
    )


def signals(erase_id: str | None = "e-1") -> tuple[ErasureSignal, ErasureSignal]:
    return (
        ErasureSignal(ADA, "scores", erase_id, REQUESTED),
        ErasureSignal(ADA, "stage_changes", erase_id, REQUESTED),
    )


async def status(sessions: Sessions, erase_id: str) -> tuple[bool, bool, bool]:
    """Scores signal recorded, stage changes signal recorded, complete."""
    async with sessions() as session:
        row = await store.erasure(session, erase_id)
    assert row is not None
    recorded = (row.scores_erased_at, row.stage_changes_erased_at, row.completed_at)
    return tuple(at is not None for at in recorded)  # type: ignore[return-value]


async def test_each_signal_deletes_every_row_and_both_complete_the_request(
    sessions: Sessions, database: Database
) -> None:
    await seed(sessions)
    await store.request_erasure(sessions, "e-1", ADA, REQUESTED)
    assert await status(sessions, "e-1") == (False, False, False)
    scores_signal, changes_signal = signals()

    await store.record_batch(sessions, [], [], [scores_signal])
    async with sessions() as session:
        assert await lead_reads.get_lead(session, ADA, READ_AT) is None
        assert await store.history(session, ADA) is None
        assert await store.breakdown(session, ADA) is None
        assert await lead_reads.get_lead(session, BOB, READ_AT) is not None
        assert [c.lead_id for c in (await store.feed(session)).items] == [BOB]
    assert await status(sessions, "e-1") == (True, False, False)

    # a stale stage change of the erased lead, read late from its topic, comes back...
    await store.record_batch(sessions, [stage_change(ADA, 2, Stage.PROSPECT, Stage.LEAD)], [])
    # ...until that topic's own signal: then the request is complete and nothing is left
    await store.record_batch(sessions, [], [], [changes_signal])
    assert await status(sessions, "e-1") == (True, True, True)
    assert await tables_holding(database.engine, ADA) == {}
    assert await tables_holding(database.engine, store.lead_hash(ADA)) == {"erasures": 1}

    before = await snapshot(sessions)
    async with sessions() as session:
        completed = await store.erasure(session, "e-1")
    await store.record_batch(sessions, [], [], list(signals()))  # redelivered
    assert await snapshot(sessions) == before
    async with sessions() as session:
        again = await store.erasure(session, "e-1")
    assert completed is not None
    assert again is not None
    assert again.completed_at == completed.completed_at


async def test_records_after_the_signals_in_the_same_batch_are_a_new_lead(
    sessions: Sessions,
) -> None:
    await seed(sessions)
    await store.record_batch(
        sessions, [stage_change(ADA, 1, Stage.LEAD)], [score_update(ADA, 1, 5.0)], list(signals())
    )
    async with sessions() as session:
        history = await store.history(session, ADA)
        lead = await lead_reads.get_lead(session, ADA, READ_AT)
    assert history is not None
    assert [c.sequence for c in history.items] == [1]
    assert lead is not None
    assert (lead.total, lead.stage) == (5.0, Stage.LEAD)


async def test_a_new_lead_written_between_the_two_signals_is_kept(sessions: Sessions) -> None:
    """Scores read ahead of stage changes: after the scores' signal, the scores carry the
    new lead and the stage changes still the erased one, until their own signal."""
    await seed(sessions)
    scores_signal, changes_signal = signals()
    await store.record_batch(sessions, [], [], [scores_signal])
    new_score = score_update(ADA, 1, 5.0)
    await store.record_batch(sessions, [stage_change(ADA, 2, Stage.PROSPECT)], [new_score])
    await store.record_batch(sessions, [stage_change(ADA, 1, Stage.LEAD)], [], [changes_signal])
    async with sessions() as session:
        lead = await lead_reads.get_lead(session, ADA, READ_AT)
        history = await store.history(session, ADA)
        breakdown = await store.breakdown(session, ADA)
    assert lead is not None
    assert (lead.stage, lead.total) == (Stage.LEAD, 5.0)
    assert history is not None
    assert [c.sequence for c in history.items] == [1]  # the new lead's, after the signal
    assert breakdown is not None
    assert breakdown.sequence == 1


async def test_a_new_lead_from_stage_changes_read_ahead_is_kept(sessions: Sessions) -> None:
    await seed(sessions)
    scores_signal, changes_signal = signals()
    await store.record_batch(sessions, [], [], [changes_signal])
    await store.record_batch(
        sessions,
        [stage_change(ADA, 1, Stage.LEAD, total=7.0)],
        [score_update(ADA, 4, 99.0, Stage.PROSPECT)],  # the erased lead's, read late
    )
    await store.record_batch(sessions, [], [], [scores_signal])
    async with sessions() as session:
        lead = await lead_reads.get_lead(session, ADA, READ_AT)
        history = await store.history(session, ADA)
        assert await store.breakdown(session, ADA) is None
    assert lead is not None
    assert (lead.stage, lead.total, lead.as_of) == (Stage.LEAD, 7.0, None)
    assert history is not None
    assert [c.sequence for c in history.items] == [1]
    # the next score update of the new lead takes over as any first one does
    await store.record_batch(sessions, [], [score_update(ADA, 1, 8.0)])
    async with sessions() as session:
        lead = await lead_reads.get_lead(session, ADA, READ_AT)
    assert lead is not None
    assert lead.total == 8.0


async def test_stale_records_alone_between_the_signals_leave_nothing(sessions: Sessions) -> None:
    await seed(sessions)
    scores_signal, changes_signal = signals()
    await store.record_batch(sessions, [], [], [changes_signal])
    await store.record_batch(sessions, [], [score_update(ADA, 4, 99.0, Stage.PROSPECT)])
    await store.record_batch(sessions, [], [], [scores_signal])
    async with sessions() as session:
        assert await lead_reads.get_lead(session, ADA, READ_AT) is None
        assert await store.breakdown(session, ADA) is None


async def test_a_signal_of_an_unrecorded_request_records_it(sessions: Sessions) -> None:
    """Its DELETE got a 503 (the request was withdrawn), but the erase record did land."""
    await store.request_erasure(sessions, "e-2", ADA, REQUESTED)
    await store.withdraw_erasure(sessions, "e-2")
    async with sessions() as session:
        assert await store.erasure(session, "e-2") is None
    await store.record_batch(sessions, [], [], list(signals("e-2")))
    assert await status(sessions, "e-2") == (True, True, True)
    async with sessions() as session:
        row = await store.erasure(session, "e-2")
    assert row is not None
    assert row.requested_at == REQUESTED
    assert row.lead_hash == store.lead_hash(ADA)


async def test_a_request_with_a_signal_recorded_is_not_withdrawn(sessions: Sessions) -> None:
    await store.request_erasure(sessions, "e-3", ADA, REQUESTED)
    await store.record_batch(sessions, [], [], [signals("e-3")[1]])
    await store.withdraw_erasure(sessions, "e-3")
    assert await status(sessions, "e-3") == (False, True, False)


async def test_a_signal_without_an_erase_id_still_deletes_the_rows(sessions: Sessions) -> None:
    await seed(sessions)
    await store.record_batch(sessions, [], [], [ErasureSignal(ADA, "scores")])
    async with sessions() as session:
        assert await lead_reads.get_lead(session, ADA, READ_AT) is None
        assert await lead_reads.get_lead(session, BOB, READ_AT) is not None

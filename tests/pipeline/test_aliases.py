"""Identity merges in the store, on SQLite and PostgreSQL: the merge's score update records
the alias and the anonymous lead leaves every table and count, once, whatever comes late."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline import aliases, analytics_queries, analytics_summaries, journeys, store
from services.pipeline.analytics import TimeRange
from services.pipeline.api_models import LeadMerge
from shared.database import Database
from shared.erasure_signals import ErasureSignal
from shared.events import ScoreUpdate, Stage, StageChange
from tests.pipeline.records import (
    account_score,
    score_update,
    snapshot,
    stage_change,
    tables_holding,
)
from tests.pipeline.test_analytics_brute_force import summaries
from tests.pipeline.test_store import lead

Sessions = async_sessionmaker[AsyncSession]

ANON, KNOWN, OTHER = "anon:v-7f3a", "ada@example.com", "bob@example.org"
MERGE_ID = "merge-of-v-7f3a"
REASON = f"identity merge of {ANON}: page.viewed /pricing"


def merge_update(sequence: int, total: float = 70.0) -> ScoreUpdate:
    """The update the merge gives the known lead (services/scoring/identity.py)."""
    update = score_update(KNOWN, sequence, total, Stage.PROSPECT)
    return update.model_copy(update={"merged_from": ANON, "trigger_event_id": MERGE_ID})


def merge_change(sequence: int) -> StageChange:
    change = stage_change(KNOWN, sequence, Stage.PROSPECT, Stage.LEAD, total=70.0, reason=REASON)
    return change.model_copy(update={"trigger_event_id": MERGE_ID})


def anonymous_records() -> tuple[list[StageChange], list[ScoreUpdate]]:
    return (
        [stage_change(ANON, 1, Stage.LEAD, total=20.0)],
        [score_update(ANON, 1, 10.0), score_update(ANON, 2, 20.0)],
    )


async def seed(sessions: Sessions) -> None:
    """The visitor and the known lead before the merge, both members of one account."""
    changes, updates = anonymous_records()
    await store.record_batch(
        sessions,
        [
            *changes,
            stage_change(KNOWN, 1, Stage.LEAD, total=40.0),
            stage_change(OTHER, 1, Stage.LEAD),
        ],
        [*updates, score_update(KNOWN, 1, 40.0), score_update(OTHER, 1, 12.0)],
        account_scores=[account_score("example.com", 1, {ANON: 20.0, KNOWN: 40.0})],
    )


async def merge(sessions: Sessions) -> None:
    await store.record_batch(sessions, [merge_change(2)], [merge_update(2)])


async def assert_consistent(sessions: Sessions) -> None:
    """The summaries and journeys the batches kept equal a rebuild from the rows."""
    kept = await summaries(sessions)
    async with sessions() as session, session.begin():
        await journeys.rebuild(session)
        await analytics_summaries.rebuild(session)
    assert await summaries(sessions) == kept


async def assert_merged(sessions: Sessions, database: Database) -> None:
    """The visitor is gone but for its alias and the merge's reason in the known history."""
    assert await tables_holding(database.engine, ANON) == {"lead_aliases": 1, "stage_changes": 1}
    async with sessions() as session:
        assert await store.history(session, ANON) is None
        assert await store.breakdown(session, ANON) is None
        assert await aliases.resolve(session, ANON) == KNOWN
        assert await aliases.resolve(session, KNOWN) is None
        assert (await store.funnel(session)).total_leads == 2
        window = await analytics_queries.funnel(session, TimeRange(), by_source=False)
        assert window.total_leads == 2
        assert [c.reason for c in (await store.feed(session)).items if c.lead_id == KNOWN] == [
            "fit 60 >= 50",
            REASON,
        ]
    assert (await lead(sessions, KNOWN)).total == 70.0
    await assert_consistent(sessions)


async def test_a_merge_records_the_alias_and_removes_the_anonymous_lead(
    sessions: Sessions, database: Database
) -> None:
    await seed(sessions)
    async with sessions() as session:
        assert (await store.funnel(session)).total_leads == 3

    await merge(sessions)

    await assert_merged(sessions, database)
    async with sessions() as session:
        merges = await aliases.merges_into(session, KNOWN)
    assert merges == [
        LeadMerge(
            merged_from=ANON,
            merge_id=MERGE_ID,
            merged_at=merge_update(2).as_of,
            recorded_at=merges[0].recorded_at,
        )
    ]


async def test_a_redelivered_merge_and_late_anonymous_records_change_nothing(
    sessions: Sessions, database: Database
) -> None:
    await seed(sessions)
    await merge(sessions)
    before = await snapshot(sessions)

    await merge(sessions)  # redelivered
    changes, updates = anonymous_records()
    await store.record_batch(sessions, changes, updates)  # read late, from before the merge
    late_change = stage_change(ANON, 2, Stage.PROSPECT, Stage.LEAD)
    await store.record_batch(sessions, [late_change], [score_update(ANON, 3, 55.0)])
    await store.record_batch(
        sessions, [], [], account_scores=[account_score("x.io", 1, {ANON: 5.0})]
    )

    after = await snapshot(sessions)
    assert {table: rows for table, rows in after.items() if table != "accounts"} == {
        table: rows for table, rows in before.items() if table != "accounts"
    }
    await assert_merged(sessions, database)


async def test_a_merge_in_one_batch_with_the_visitors_records_and_a_later_update(
    sessions: Sessions, database: Database
) -> None:
    """The merge is not the known lead's newest update of its batch: it is recorded still."""
    changes, updates = anonymous_records()
    await store.record_batch(
        sessions,
        [
            *changes,
            stage_change(KNOWN, 1, Stage.LEAD, total=40.0),
            merge_change(2),
            stage_change(OTHER, 1, Stage.LEAD),
        ],
        [
            *updates,
            score_update(KNOWN, 1, 40.0),
            merge_update(2, 69.0),
            score_update(KNOWN, 3, 70.0, Stage.PROSPECT),
            score_update(OTHER, 1, 12.0),
        ],
    )
    await assert_merged(sessions, database)


async def test_erasing_the_known_lead_erases_its_aliases(
    sessions: Sessions, database: Database
) -> None:
    await seed(sessions)
    await merge(sessions)
    await store.request_erasure(sessions, "e-1", KNOWN, merge_update(2).as_of)

    await store.record_batch(sessions, [], [], [ErasureSignal(KNOWN, "scores", "e-1")])
    await store.record_batch(sessions, [], [], [ErasureSignal(KNOWN, "stage_changes", "e-1")])

    assert await tables_holding(database.engine, ANON) == {}
    assert await tables_holding(database.engine, KNOWN) == {}
    async with sessions() as session:
        assert await aliases.resolve(session, ANON) is None
        assert (await store.funnel(session)).total_leads == 1
    await assert_consistent(sessions)


async def test_erasing_an_alias_forgets_it_and_keeps_the_known_lead(
    sessions: Sessions, database: Database
) -> None:
    """Scoring drops the alias marker: later events of the id make a new visitor."""
    await seed(sessions)
    await merge(sessions)
    signals = [ErasureSignal(ANON, "scores", "e-2"), ErasureSignal(ANON, "stage_changes", "e-2")]

    await store.record_batch(sessions, [], [], signals)

    assert await tables_holding(database.engine, ANON) == {"stage_changes": 1}  # the reason
    assert (await lead(sessions, KNOWN)).total == 70.0
    await store.record_batch(
        sessions, [stage_change(ANON, 1, Stage.LEAD)], [score_update(ANON, 1, 3.0)]
    )
    assert (await lead(sessions, ANON)).total == 3.0
    async with sessions() as session:
        assert await aliases.resolve(session, ANON) is None
    await assert_consistent(sessions)


@pytest.mark.parametrize("first", ["scores", "stage_changes"])
async def test_a_merge_between_the_two_signals_of_an_erasure(
    sessions: Sessions, database: Database, first: str
) -> None:
    """Aliases come from the scores topic: between the signals, a merge read from it is
    the new lead's once its own signal came first, the erased lead's otherwise."""
    await seed(sessions)
    await merge(sessions)
    second = "stage_changes" if first == "scores" else "scores"
    await store.record_batch(sessions, [], [], [ErasureSignal(KNOWN, first, "e-3")])  # type: ignore[arg-type]

    await merge(sessions)
    await store.record_batch(sessions, [], [], [ErasureSignal(KNOWN, second, "e-3")])  # type: ignore[arg-type]

    async with sessions() as session:
        resolved = await aliases.resolve(session, ANON)
    assert resolved == (KNOWN if first == "scores" else None)
    await assert_consistent(sessions)

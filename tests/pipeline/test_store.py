"""The store's contract, on SQLite and PostgreSQL alike: idempotent writes, exact reads."""

from __future__ import annotations

import base64
import itertools
import json
import math
import random
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline import lead_reads, store
from services.pipeline.api_models import Lead
from shared.database import Database
from shared.events import RuleContribution, ScoreUpdate, Stage, StageChange
from tests.pipeline.conftest import empty_tables
from tests.pipeline.records import READ_AT, score_update, snapshot, stage_change

Sessions = async_sessionmaker[AsyncSession]


async def lead(sessions: Sessions, lead_id: str) -> Lead:
    async with sessions() as session:
        found = await lead_reads.get_lead(session, lead_id, READ_AT)
    assert found is not None, lead_id
    return found


async def test_redelivered_stage_changes_change_nothing(sessions: Sessions) -> None:
    changes = [
        stage_change("ada@example.com", 1, Stage.LEAD),
        stage_change("ada@example.com", 2, Stage.PROSPECT, Stage.LEAD),
        stage_change("bob@example.org", 1, Stage.LEAD),
    ]
    await store.record_batch(sessions, changes, [score_update("ada@example.com", 2, 61.0)])
    before = await snapshot(sessions)
    assert len(before["stage_changes"]) == 3

    await store.record_batch(sessions, changes, [])
    await store.record_batch(sessions, changes[1:2], [score_update("ada@example.com", 2, 61.0)])
    for change in changes:
        await store.record_batch(sessions, [change], [])

    assert await snapshot(sessions) == before


async def test_an_older_score_update_never_overwrites_a_newer_one(sessions: Sessions) -> None:
    await store.record_batch(sessions, [], [score_update("ada", 5, 80.0, Stage.PROSPECT)])
    before = await snapshot(sessions)

    await store.record_batch(sessions, [], [score_update("ada", 3, 20.0, Stage.LEAD)])
    await store.record_batch(sessions, [], [score_update("ada", 5, 99.0, Stage.LEAD)])

    assert await snapshot(sessions) == before
    assert (await lead(sessions, "ada")).total == 80.0


async def test_a_newer_score_update_replaces_score_and_breakdown(sessions: Sessions) -> None:
    await store.record_batch(sessions, [], [score_update("ada", 1, 10.0)])
    await store.record_batch(sessions, [], [score_update("ada", 2, 55.5, Stage.PROSPECT)])

    found = await lead(sessions, "ada")
    assert (found.total, found.stage) == (55.5, Stage.PROSPECT)
    async with sessions() as session:
        explained = await store.breakdown(session, "ada")
    assert explained is not None
    assert explained.sequence == 2
    assert explained.total == 55.5
    assert math.isclose(sum(item.points for item in explained.breakdown), explained.total)
    assert explained.breakdown == score_update("ada", 2, 55.5).breakdown


async def test_duplicates_inside_one_batch_are_recorded_once(sessions: Sessions) -> None:
    first = stage_change("ada", 2, Stage.PROSPECT, Stage.LEAD)
    retried = first.model_copy(update={"reason": "a redelivered copy"})
    updates = [
        score_update("ada", 3, 70.0, Stage.PROSPECT),
        score_update("ada", 4, 75.0, Stage.PROSPECT),
        score_update("ada", 4, 75.0, Stage.PROSPECT),
        score_update("ada", 1, 5.0),
        score_update("bob", 1, 5.0),
        score_update("bob", 1, 5.0),
    ]
    await store.record_batch(sessions, [first, retried, first], updates)

    tables = await snapshot(sessions)
    assert len(tables["stage_changes"]) == 1
    assert len(tables["leads"]) == 2
    assert len(tables["score_breakdowns"]) == 2
    async with sessions() as session:
        history = await store.history(session, "ada")
    assert history is not None
    assert [c.reason for c in history.items] == [first.reason]  # the first copy wins
    assert (await lead(sessions, "ada")).total == 75.0


def stage_story(lead_id: str) -> list[StageChange | ScoreUpdate]:
    """Five events of one lead as scoring numbers its outputs: one counter per topic.

    Every event yields a score update (``score_sequence`` counts events) carrying
    the stage after the event; a move also yields a stage change (``change_sequence``
    counts moves), in the same Kafka transaction.
    """
    return [
        score_update(lead_id, 1, 10.0, Stage.LEAD),
        stage_change(lead_id, 1, Stage.LEAD, total=10.0),
        score_update(lead_id, 2, 20.0, Stage.LEAD),
        score_update(lead_id, 3, 55.0, Stage.PROSPECT),
        stage_change(lead_id, 2, Stage.PROSPECT, Stage.LEAD, total=55.0),
        score_update(lead_id, 4, 58.0, Stage.PROSPECT),
        score_update(lead_id, 5, 95.0, Stage.OPPORTUNITY),
        stage_change(lead_id, 3, Stage.OPPORTUNITY, Stage.PROSPECT, total=95.0),
    ]


def _split(records: list[StageChange | ScoreUpdate]) -> tuple[list[StageChange], list[ScoreUpdate]]:
    changes = [r for r in records if isinstance(r, StageChange)]
    updates = [r for r in records if isinstance(r, ScoreUpdate)]
    return changes, updates


def arrival_orders() -> list[tuple[int, ...]]:
    """The adversarial orders (each topic whole before the other, reversed) and a sample."""
    story = range(len(stage_story("x")))
    changes_first = (1, 4, 7, 0, 2, 3, 5, 6)
    scores_first = (0, 2, 3, 5, 6, 1, 4, 7)
    fixed = [tuple(story), tuple(reversed(story)), changes_first, scores_first]
    sample = random.Random(20261120).sample(list(itertools.permutations(story)), 36)
    return fixed + sample


async def test_the_newest_score_update_sets_the_stage_whatever_the_arrival_order(
    sessions: Sessions,
) -> None:
    """Many orders of the two topics' records, one record per batch, and all in one batch.

    Each order plays on its own lead, so the k-th batch carries every lead's k-th record.
    """
    orders = arrival_orders()
    stories = {f"ada-{n}": stage_story(f"ada-{n}") for n in range(len(orders))}
    for step in range(len(orders[0])):
        batch = [stories[f"ada-{n}"][order[step]] for n, order in enumerate(orders)]
        await store.record_batch(sessions, *_split(batch))
    await store.record_batch(sessions, *_split(stage_story("ada-together")))

    outcomes = set()
    async with sessions() as session:
        for lead_id in [*stories, "ada-together"]:
            found = await lead_reads.get_lead(session, lead_id, READ_AT)
            history = await store.history(session, lead_id)
            explained = await store.breakdown(session, lead_id)
            assert found is not None
            assert history is not None
            assert explained is not None
            outcomes.add(
                (
                    found.stage,
                    found.total,
                    found.as_of,
                    explained.sequence,
                    tuple((c.sequence, c.from_stage, c.to_stage) for c in history.items),
                )
            )
    assert outcomes == {
        (
            Stage.OPPORTUNITY,
            95.0,
            score_update("ada", 5, 95.0).as_of,
            5,
            (
                (1, None, Stage.LEAD),
                (2, Stage.LEAD, Stage.PROSPECT),
                (3, Stage.PROSPECT, Stage.OPPORTUNITY),
            ),
        )
    }


async def test_stage_changes_set_the_stage_only_until_a_score_update_arrives(
    sessions: Sessions,
) -> None:
    # Seen through stage changes alone: the newest change rules.
    await store.record_batch(sessions, [stage_change("ada", 2, Stage.PROSPECT, Stage.LEAD)], [])
    await store.record_batch(sessions, [stage_change("ada", 1, Stage.LEAD)], [])
    assert (await lead(sessions, "ada")).stage == Stage.PROSPECT

    # A score update takes over, whatever its stage (its counter is not the changes' one).
    await store.record_batch(sessions, [], [score_update("ada", 2, 20.0, Stage.LEAD)])
    assert (await lead(sessions, "ada")).stage == Stage.LEAD

    # A move recorded before the score update of the same event: history first, row next poll.
    await store.record_batch(sessions, [stage_change("ada", 3, Stage.PROSPECT, Stage.LEAD)], [])
    assert (await lead(sessions, "ada")).stage == Stage.LEAD
    await store.record_batch(sessions, [], [score_update("ada", 3, 55.0, Stage.PROSPECT)])
    assert (await lead(sessions, "ada")).stage == Stage.PROSPECT


async def test_a_lead_first_seen_through_a_stage_change_shows_its_score(
    sessions: Sessions,
) -> None:
    await store.record_batch(sessions, [stage_change("ada", 2, Stage.PROSPECT, total=62.0)], [])
    found = await lead(sessions, "ada")
    assert (found.stage, found.total, found.as_of) == (Stage.PROSPECT, 62.0, None)
    async with sessions() as session:
        assert await store.breakdown(session, "ada") is None

    await store.record_batch(sessions, [], [score_update("ada", 3, 64.0, Stage.PROSPECT)])
    found = await lead(sessions, "ada")
    assert (found.total, found.as_of) == (64.0, score_update("ada", 3, 64.0).as_of)


async def test_non_finite_scores_are_refused_before_writing(sessions: Sessions) -> None:
    bad = score_update("ada", 1, 1.0).model_copy(update={"total": math.nan})
    with pytest.raises(ValueError, match="non-finite"):
        await store.record_batch(sessions, [stage_change("bob", 1, Stage.LEAD)], [bad])
    assert (await snapshot(sessions))["leads"] == []


async def test_history_is_in_sequence_order(sessions: Sessions) -> None:
    later = stage_change("ada", 9, Stage.OPPORTUNITY, Stage.PROSPECT)
    earlier = stage_change("ada", 4, Stage.PROSPECT, Stage.LEAD)
    await store.record_batch(sessions, [later], [])
    await store.record_batch(sessions, [earlier, stage_change("bob", 1, Stage.LEAD)], [])
    await store.record_batch(sessions, [], [score_update("quiet", 1, 1.0)])

    async with sessions() as session:
        history = await store.history(session, "ada")
        unknown = await store.history(session, "nobody")
        quiet = await store.history(session, "quiet")
    assert history is not None
    assert [c.sequence for c in history.items] == [4, 9]
    # served exactly as scoring published them, plus where and when they were recorded
    as_published = [
        StageChange.model_validate(c.model_dump(exclude={"position", "recorded_at"}))
        for c in history.items
    ]
    assert as_published == [earlier, later]
    assert unknown is None
    assert quiet is not None
    assert quiet.items == []


async def test_funnel_counts_current_stages_and_how_far_leads_got(sessions: Sessions) -> None:
    L, P, OP, C, D = (
        Stage.LEAD,
        Stage.PROSPECT,
        Stage.OPPORTUNITY,
        Stage.CUSTOMER,
        Stage.DISQUALIFIED,
    )
    changes = [
        stage_change("a", 1, L),  # a: still a lead
        stage_change("b", 1, L),
        stage_change("b", 2, P, L),  # b: prospect
        stage_change("c", 1, L),
        stage_change("c", 2, OP, L),  # c: straight to opportunity (passed prospect)
        stage_change("d", 1, L),
        stage_change("d", 2, P, L),
        stage_change("d", 3, OP, P),
        stage_change("d", 4, C, OP),  # d: customer
        stage_change("e", 1, L),
        stage_change("e", 2, P, L),
        stage_change("e", 3, D, P),  # e: disqualified after reaching prospect
        stage_change("f", 1, L),
        stage_change("f", 2, OP, L),
        stage_change("f", 3, L, OP),  # f: moved back to lead by stage.set, reached opportunity
    ]
    # g: seen only through a score update, never a stage change
    await store.record_batch(sessions, changes, [score_update("g", 1, 3.0)])

    async with sessions() as session:
        funnel = await store.funnel(session)

    by_stage = {s.stage: (s.current, s.reached) for s in funnel.stages}
    assert funnel.total_leads == 7
    assert by_stage == {L: (3, 7), P: (1, 5), OP: (1, 3), C: (1, 1), D: (1, 1)}
    rates = {(c.from_stage, c.to_stage): c.rate for c in funnel.conversions}
    assert rates == {(L, P): 5 / 7, (P, OP): 3 / 5, (OP, C): 1 / 3}


async def test_an_empty_funnel_has_no_rates(sessions: Sessions) -> None:
    async with sessions() as session:
        funnel = await store.funnel(session)
    assert funnel.total_leads == 0
    assert all(c.rate is None for c in funnel.conversions)
    assert [s.stage for s in funnel.stages] == list(Stage)


async def test_the_feed_returns_every_change_once_in_recorded_order(sessions: Sessions) -> None:
    first = [stage_change(f"lead-{i}", 1, Stage.LEAD) for i in range(5)]
    second = [stage_change("lead-0", 2, Stage.PROSPECT, Stage.LEAD), *first[:2]]
    third = [stage_change(f"lead-{i}", 2, Stage.OPPORTUNITY, Stage.LEAD) for i in (3, 4)]
    for batch in (first, second, third):
        await store.record_batch(sessions, batch, [])

    seen = []
    after = 0
    async with sessions() as session:
        while True:
            page = await store.feed(session, after=after, limit=3)
            assert len(page.items) <= 3
            if not page.items:
                assert page.next_after == after
                break
            seen.extend(page.items)
            after = page.next_after
    positions = [c.position for c in seen]
    assert positions == sorted(set(positions))
    assert [(c.lead_id, c.sequence) for c in seen] == [
        *[(f"lead-{i}", 1) for i in range(5)],
        ("lead-0", 2),
        ("lead-3", 2),
        ("lead-4", 2),
    ]


LEAD_IDS = [f"lead{i:02d}" for i in range(40)]


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    totals=st.lists(
        st.sampled_from([-15.0, 0.0, 12.5, 50.0, 50.0, 72.25, 1e9]), min_size=0, max_size=40
    ),
    stages=st.lists(st.sampled_from(list(Stage)), min_size=40, max_size=40),
    limit=st.integers(min_value=1, max_value=7),
    stage_filter=st.none() | st.sampled_from(list(Stage)),
    min_score=st.none() | st.sampled_from([0.0, 12.5, 50.0]),
)
async def test_pagination_returns_every_matching_lead_once_in_order(
    sessions: Sessions,
    database: Database,
    totals: list[float],
    stages: list[Stage],
    limit: int,
    stage_filter: Stage | None,
    min_score: float | None,
) -> None:
    await empty_tables(database.engine)
    updates = [
        score_update(lead_id, 1, total, stage)
        for lead_id, total, stage in zip(LEAD_IDS, totals, stages, strict=False)
    ]
    await store.record_batch(sessions, [], updates)
    expected = sorted(
        (
            (u.total, u.lead_id)
            for u in updates
            if (stage_filter is None or u.stage == stage_filter)
            and (min_score is None or u.total >= min_score)
        ),
        key=lambda key: (-key[0], key[1]),
    )

    seen: list[tuple[float, str]] = []
    cursor = None
    async with sessions() as session:
        for _ in range(len(expected) + 2):
            page = await lead_reads.list_leads(
                session,
                READ_AT,
                stage=stage_filter,
                min_score=min_score,
                limit=limit,
                cursor=cursor,
            )
            assert len(page.items) <= limit
            seen.extend((item.total, item.lead_id) for item in page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
    assert cursor is None
    assert seen == expected


@pytest.mark.parametrize(
    "cursor",
    ["", "!!!", "bm90IGpzb24", "WzEsMl0", "WyJhIiwiYiJd", "W05hTiwiYSJd", "W3RydWUsImEiXQ"],
)
async def test_a_forged_cursor_is_refused(sessions: Sessions, cursor: str) -> None:
    async with sessions() as session:
        with pytest.raises(store.InvalidCursor):
            await lead_reads.list_leads(session, READ_AT, cursor=cursor)


ANY_LEAD_ID = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=300)
"""What an event's lead_id may be: no control characters, no lone surrogates."""


AT = datetime(2026, 12, 2, 9, 30, 15, 123456, tzinfo=UTC)


@given(total=st.floats(allow_nan=False, allow_infinity=False), lead_id=ANY_LEAD_ID)
def test_cursors_round_trip_exactly(total: float, lead_id: str) -> None:
    cursor = lead_reads.encode_cursor(AT, total, lead_id)
    assert lead_reads.decode_cursor(cursor) == (AT, total, lead_id)


WHEN = "2026-12-02T09:30:15Z"


@pytest.mark.parametrize(
    "payload",
    [
        ["at", WHEN, 10**400, "a"],
        ["at", WHEN, 1, "\ud800"],
        ["at", WHEN, 1, "a\u0000b"],
        ["at", WHEN, True, "a"],
        ["at", WHEN, "1", "a"],
        ["at", "2026-12-02T09:30:15", 1, "a"],
        ["at", "yesterday", 1, "a"],
        [1.5, "a"],
    ],
    ids=["huge-number", "lone-surrogate", "nul", "bool", "text-total", "naive", "no-time", "old"],
)
def test_cursors_we_could_not_have_issued_are_refused(payload: list[object]) -> None:
    raw = json.dumps(payload).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with pytest.raises(store.InvalidCursor):
        lead_reads.decode_cursor(cursor)


@given(
    st.lists(
        st.builds(
            RuleContribution,
            rule=st.text(max_size=40),
            axis=st.sampled_from(["fit", "engagement"]),
            points=st.floats(allow_nan=False, allow_infinity=False),
            count=st.integers(min_value=0, max_value=2**31),
        ),
        max_size=12,
    )
)
def test_the_stored_breakdown_is_each_contribution_in_json_form(
    contributions: list[RuleContribution],
) -> None:
    # the store spells the document out for speed; it must stay the model's JSON form
    update = score_update("ada", 1, 10.0).model_copy(update={"breakdown": contributions})
    row = store._breakdown_row(update, READ_AT)
    assert row["breakdown"] == [item.model_dump(mode="json") for item in contributions]

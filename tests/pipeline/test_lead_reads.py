"""Leads valued at a moment, on SQLite and PostgreSQL: every page of the score-ordered
listing against a brute force over the same rows, valued the same way."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline import lead_reads, store
from services.pipeline.decay import StoredEngagement, decayed
from services.pipeline.lead_reads import COLUMNS, value
from shared.events import ScoreUpdate, Stage
from tests.pipeline.records import score_update, stage_change

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 8, 1, tzinfo=UTC)
HALF_LIFE = 30 * 86400.0
FITS = [0.0, 20.0, 35.0, 50.0, 70.0]
STAGES = [Stage.LEAD, Stage.PROSPECT, Stage.OPPORTUNITY]


def rows(count: int, seed: int = 3) -> list[ScoreUpdate]:
    """Score updates with ties of every kind: equal fits, zero engagement, the same
    engagement at the same moment, negative engagement, no half-life, a future event."""
    rng = random.Random(seed)
    updates = []
    for n in range(count):
        fit = rng.choice(FITS)
        kind = rng.random()
        engagement = (
            0.0 if kind < 0.2 else 12.5 if kind < 0.35 else -rng.uniform(1, 30) if kind < 0.45
            else rng.uniform(0, 150)
        )  # fmt: skip
        as_of = (
            T0 + timedelta(hours=12)
            if kind < 0.35
            else T0 + timedelta(hours=rng.randrange(0, 1600))
        )
        half_life = None if rng.random() < 0.1 else HALF_LIFE
        updates.append(
            score_update(
                f"lead-{n:04d}@example.com",
                1,
                fit + engagement,
                rng.choice(STAGES),
                fit=fit,
                as_of=as_of,
                half_life_seconds=half_life,
            )
        )
    return updates


async def seeded(sessions: Sessions, count: int = 400) -> None:
    await store.record_batch(sessions, [], rows(count))


async def brute_force(
    sessions: Sessions, at: datetime, stage: Stage | None, min_score: float | None
) -> list[tuple[float, str]]:
    async with sessions() as session:
        everything = (await session.execute(select(*COLUMNS))).all()
    leads = [value(row, at) for row in everything]
    wanted = [
        (lead.total, lead.lead_id)
        for lead in leads
        if (stage is None or lead.stage == stage) and (min_score is None or lead.total >= min_score)
    ]
    return sorted(wanted, key=lambda key: (-key[0], key[1]))


@pytest.mark.parametrize(
    ("days", "stage", "min_score", "limit"),
    [
        (60, None, None, 37),
        (60, Stage.PROSPECT, None, 10),
        (60, None, 50.0, 25),
        (80, Stage.LEAD, 20.0, 7),
        (10, None, 35.0, 50),  # before many leads' latest events: those valued as stored
        (400, None, -5.0, 60),  # a year on: engagement has all but gone
    ],
)
async def test_every_page_is_the_brute_force_valued_at_the_same_moment(
    sessions: Sessions, days: int, stage: Stage | None, min_score: float | None, limit: int
) -> None:
    await seeded(sessions)
    at = T0 + timedelta(days=days)
    expected = await brute_force(sessions, at, stage, min_score)
    assert expected, "the case selects no lead"
    seen: list[tuple[float, str]] = []
    cursor = None
    async with sessions() as session:
        for _ in range(len(expected) // limit + 2):
            page = await lead_reads.list_leads(
                session, at, stage=stage, min_score=min_score, limit=limit, cursor=cursor
            )
            assert len(page.items) <= limit
            assert all(item.valued_at >= at for item in page.items)
            seen.extend((item.total, item.lead_id) for item in page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
            # a later page is valued at the first page's moment, whatever the clock says
            assert lead_reads.decode_cursor(cursor)[0] == at
    assert cursor is None
    assert seen == expected


async def test_a_lead_decays_between_events_and_not_before_its_latest(sessions: Sessions) -> None:
    as_of = T0 + timedelta(days=5)
    update = score_update(
        "ada@example.com", 1, 90.0, fit=50.0, as_of=as_of, half_life_seconds=HALF_LIFE
    )
    await store.record_batch(sessions, [stage_change("ada@example.com", 1, Stage.LEAD)], [update])
    async with sessions() as session:
        later = await lead_reads.get_lead(session, "ada@example.com", as_of + timedelta(days=30))
        earlier = await lead_reads.get_lead(session, "ada@example.com", as_of - timedelta(days=1))
    assert later is not None
    assert earlier is not None
    assert later.engagement == pytest.approx(20.0, rel=1e-12)  # one half-life: half of 40
    assert later.total == pytest.approx(70.0, rel=1e-12)
    assert later.valued_at == as_of + timedelta(days=30)
    assert (earlier.engagement, earlier.total, earlier.valued_at) == (40.0, 90.0, as_of)


@pytest.mark.parametrize("engagement", [40.0, -12.0, 1e-6, 3e5])
def test_the_stored_form_values_engagement_as_the_decay_formula(engagement: float) -> None:
    as_of = T0 + timedelta(days=3)
    stored = StoredEngagement.of(engagement, as_of, HALF_LIFE)
    for days in (0, 1, 30, 365, 3650):
        at = as_of + timedelta(days=days)
        want = engagement * 2 ** (-(at - as_of).total_seconds() / HALF_LIFE)
        assert decayed(engagement, as_of, stored, at) == pytest.approx(want, rel=1e-12, abs=1e-300)


def test_the_stored_form_stays_finite_for_centuries() -> None:
    far = datetime(2426, 1, 1, tzinfo=UTC)
    stored = StoredEngagement.of(40.0, far, 86400.0)  # a one-day half-life, 400 years on
    assert math.isfinite(stored.log2)
    assert decayed(40.0, far, stored, far + timedelta(days=2)) == pytest.approx(10.0, rel=1e-9)

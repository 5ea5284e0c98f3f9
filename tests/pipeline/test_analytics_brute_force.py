"""Every analytics answer equals a brute-force computation over the same records.

Random histories (several seeds) go through :func:`store.record_batch` in random batches,
as the consumer writes them; the expected answers are computed here, straight from the
records and the definitions of :mod:`services.pipeline.analytics`, by other code.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline import analytics_queries as queries
from services.pipeline import analytics_summaries, journeys, store
from services.pipeline.analytics import Interval, Period, TimeRange, stay_bucket
from services.pipeline.analytics_models import StageChangeCounts
from shared.erasure_signals import ErasureSignal
from shared.events import Score, ScoreUpdate, Stage, StageChange
from tests.pipeline.records import score_update

Sessions = async_sessionmaker[AsyncSession]

START = datetime(2026, 9, 28, 7, 30, tzinfo=UTC)
AS_OF = START + timedelta(days=70)
RANK = {"lead": 0, "prospect": 1, "opportunity": 2, "customer": 3}
SOURCES = ["webinar", "form", "ads", None]


@dataclass
class History:
    changes: list[StageChange] = field(default_factory=list)
    scores: list[ScoreUpdate] = field(default_factory=list)


def random_histories(seed: int, leads: int = 120) -> dict[str, History]:
    rng = random.Random(seed)
    histories: dict[str, History] = {}
    for n in range(leads):
        lead = f"lead-{n}@example.com"
        history = History()
        at = START + timedelta(seconds=rng.randrange(60 * 86400))
        stage: Stage | None = None
        for sequence in range(1, rng.choice([1, 1, 2, 3, 4, 6]) + 1):
            to_stage = rng.choice([s for s in Stage if s != stage])
            history.changes.append(
                StageChange(
                    change_id=f"{lead}#{sequence}",
                    lead_id=lead,
                    sequence=sequence,
                    from_stage=stage,
                    to_stage=to_stage,
                    reason="test",
                    trigger_event_id=f"{lead}/{sequence}",
                    occurred_at=at,
                    score=Score(fit=1, engagement=1, total=2),
                    model_version="m",
                    source=rng.choice(SOURCES),
                )
            )
            stage = to_stage
            # now and then a change out of time order, as late events make them
            at += timedelta(seconds=rng.choice([-3600, 0, 1, 59, 3600, 86400, 5 * 86400]))
        if rng.random() < 0.3:
            history.scores.append(score_update(lead, 1, 10.0, rng.choice(list(Stage))))
        if rng.random() < 0.05:  # a lead only known from its score so far
            history.changes = []
            history.scores = [score_update(lead, 1, 10.0, Stage.PROSPECT)]
        histories[lead] = history
    return histories


async def record(sessions: Sessions, histories: dict[str, History], seed: int) -> None:
    """In random batches, each lead's records in order, as one partition delivers them."""
    rng = random.Random(seed + 1000)
    pending = {lead: [*h.changes, *h.scores] for lead, h in histories.items()}
    while pending:
        changes: list[StageChange] = []
        scores: list[ScoreUpdate] = []
        for lead in rng.sample(sorted(pending), min(len(pending), 25)):
            for _ in range(rng.randint(1, 3)):
                if not pending[lead]:
                    break
                item = pending[lead].pop(0)
                (changes if isinstance(item, StageChange) else scores).append(item)  # type: ignore[arg-type]
            if not pending[lead]:
                del pending[lead]
        await store.record_batch(sessions, changes, scores)


# --- the brute force -------------------------------------------------------------------


def nearest(values: list[float], p: float) -> float | None:
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered)) - 1] if ordered else None


def entered(h: History) -> datetime | None:
    return min((c.occurred_at for c in h.changes), default=None)


def in_window(moment: datetime | None, start: datetime | None, end: datetime | None) -> bool:
    if start is None and end is None:
        return True
    return (
        moment is not None and (start is None or moment >= start) and (end is None or moment < end)
    )


def current(h: History) -> Stage:
    if h.scores:
        return max(h.scores, key=lambda s: s.sequence).stage
    return max(h.changes, key=lambda c: c.sequence).to_stage


def furthest(h: History) -> int:
    seen = [current(h).value] + [c.to_stage.value for c in h.changes]
    seen += [c.from_stage.value for c in h.changes if c.from_stage is not None]
    return max([RANK[s] for s in seen if s in RANK], default=0)


def reached_at(h: History, rank: int) -> datetime | None:
    if rank == 0:
        return entered(h)
    times = [c.occurred_at for c in h.changes if RANK.get(c.to_stage.value, -1) >= rank]
    return min(times, default=None)


def expected_funnel(histories: dict[str, History], start: Any, end: Any) -> dict[Any, Any]:
    chosen = [h for h in histories.values() if in_window(entered(h), start, end)]

    def one(group: list[History]) -> dict[str, Any]:
        now = Counter(current(h).value for h in group)
        reached = {s.value: sum(1 for h in group if furthest(h) >= r) for s, r in RANK_STAGES}
        reached["disqualified"] = sum(
            1
            for h in group
            if current(h) == Stage.DISQUALIFIED
            or any(Stage.DISQUALIFIED in (c.from_stage, c.to_stage) for c in h.changes)
        )
        return {
            "total_leads": len(group),
            "stages": {s.value: (now[s.value], reached[s.value]) for s in Stage},
        }

    def source(h: History) -> str | None:
        return min(h.changes, key=lambda c: c.sequence).source if h.changes else None

    sources = {source(h) for h in chosen}
    return {
        "whole": one(chosen),
        **{s: one([h for h in chosen if source(h) == s]) for s in sources},
    }


RANK_STAGES = [(Stage(s), r) for s, r in RANK.items()]


def funnel_shape(answer: Any) -> dict[str, Any]:
    return {
        "total_leads": answer.total_leads,
        "stages": {s.stage.value: (s.current, s.reached) for s in answer.stages},
    }


WINDOWS = [
    (None, None),
    (START + timedelta(days=10), None),
    (None, START + timedelta(days=30, hours=5)),
    (START + timedelta(days=7, minutes=13), START + timedelta(days=40)),
    # not on hour or day bounds: the summaries' whole hours and days, the rows' edges
    (START + timedelta(days=1, seconds=0.5), START + timedelta(days=45, hours=13, seconds=31.25)),
    (None, START + timedelta(days=20, hours=3, minutes=59, seconds=59.999999)),
    (START + timedelta(days=3, minutes=17, seconds=5), START + timedelta(days=3, minutes=50)),
    (START + timedelta(days=5, hours=2, minutes=13), START + timedelta(days=5, hours=20)),
    (START + timedelta(days=2, hours=16), START + timedelta(days=2, hours=17, minutes=20)),
    (START + timedelta(days=2, hours=16), START + timedelta(days=4, hours=17)),
]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_answer_equals_the_brute_force(sessions: Sessions, seed: int) -> None:
    histories = random_histories(seed)
    await record(sessions, histories, seed)
    await check_every_answer(sessions, histories)


async def test_erased_leads_leave_the_answers_and_the_summaries(sessions: Sessions) -> None:
    histories = random_histories(11)
    await record(sessions, histories, 11)
    erased = sorted(histories)[::4]
    signals = [ErasureSignal(lead_id=lead, topic="scores") for lead in erased]
    await store.record_batch(sessions, [], [], signals)
    for lead in erased:
        del histories[lead]
    await check_every_answer(sessions, histories)
    kept = await summaries(sessions)
    async with sessions() as session, session.begin():
        await analytics_summaries.rebuild(session)
    assert await summaries(sessions) == kept


async def test_batches_of_score_updates_alone_keep_every_answer(sessions: Sessions) -> None:
    """Batches of score updates only: newer and older than the stored one, to the lead's
    stage and to others, for known leads and for leads they create. A batch recomputes the
    derived rows only of the leads whose journey shows another stage; the rest must keep
    answers, journeys and summaries exactly as a rebuild derives them."""
    histories = random_histories(4)
    await record(sessions, histories, 4)
    rng = random.Random(4)
    for round_ in range(4):
        updates = []
        for lead in rng.sample(sorted(histories), 50) + [f"new-{round_}-{n}" for n in range(3)]:
            history = histories.setdefault(lead, History())
            stage = current(history) if history.changes and rng.random() < 0.5 else None
            update = score_update(
                lead, rng.choice([1, round_ + 2]), 10.0, stage or rng.choice(list(Stage))
            )
            updates.append(update)
            history.scores.append(update)
        await store.record_batch(sessions, [], updates)
    await check_every_answer(sessions, histories)
    kept = await summaries(sessions)
    async with sessions() as session:
        journeys_kept = (await session.execute(select(queries.JOURNEYS))).all()
    async with sessions() as session, session.begin():
        await journeys.rebuild(session)
        await analytics_summaries.rebuild(session)
    assert await summaries(sessions) == kept
    async with sessions() as session:
        assert set((await session.execute(select(queries.JOURNEYS))).all()) == set(journeys_kept)


async def check_every_answer(sessions: Sessions, histories: dict[str, History]) -> None:
    async with sessions() as session:
        for start, end in WINDOWS:
            window = TimeRange(start, end)
            await check_funnel(session, histories, window)
            await check_time_in_stage(session, histories, window)
            await check_velocity(session, histories, window)
            for period in Period:
                await check_cohorts(session, histories, window, period)
            for interval in Interval:
                await check_stage_changes(session, histories, window, interval)
        # unbounded, the funnel is the one store.funnel has always served
        plain = await store.funnel(session)
        assert (await queries.funnel(session, TimeRange(), by_source=False)) == plain


async def check_funnel(session: AsyncSession, histories: dict[str, History], w: TimeRange) -> None:
    expected = expected_funnel(histories, w.start, w.end)
    answer = await queries.funnel(session, w, by_source=True)
    assert funnel_shape(answer) == expected.pop("whole")
    assert answer.breakdown is not None
    assert {b.source: funnel_shape(b) for b in answer.breakdown} == expected
    # conversions follow from reached
    reached = {s.stage: s.reached for s in answer.stages}
    for conversion in answer.conversions:
        base = reached[conversion.from_stage]
        assert conversion.rate == (reached[conversion.to_stage] / base if base else None)


async def check_time_in_stage(
    session: AsyncSession, histories: dict[str, History], w: TimeRange
) -> None:
    stays: dict[tuple[str, bool], list[float]] = defaultdict(list)
    for h in histories.values():
        ordered = sorted(h.changes, key=lambda c: c.sequence)
        for index, change in enumerate(ordered):
            if not in_window(change.occurred_at, w.start, w.end):
                continue
            following = ordered[index + 1] if index + 1 < len(ordered) else None
            end = AS_OF if following is None else following.occurred_at
            seconds = max(0.0, (end - change.occurred_at).total_seconds())
            stays[change.to_stage.value, following is None].append(seconds)
    answer = await queries.time_in_stage(session, w, AS_OF)
    for item in answer.stages:
        for still_open, spread in ((False, item.finished), (True, item.open)):
            values = stays[item.stage.value, still_open]
            assert (spread.count, spread.median_seconds, spread.p90_seconds) == (
                len(values),
                nearest(values, 0.5),
                nearest(values, 0.9),
            ), (item.stage, still_open)


async def check_velocity(
    session: AsyncSession, histories: dict[str, History], w: TimeRange
) -> None:
    chosen = [h for h in histories.values() if h.changes and in_window(entered(h), w.start, w.end)]

    def days(rank_a: int, rank_b: int) -> list[float]:
        spans = []
        for h in chosen:
            a, b = reached_at(h, rank_a), reached_at(h, rank_b)
            if b is not None:
                assert a is not None
                spans.append((b - a).total_seconds())
        return spans

    answer = await queries.velocity(session, w)
    for step, rank in zip(answer.steps, (1, 2, 3), strict=True):
        spans = days(rank - 1, rank)
        median = nearest(spans, 0.5)
        assert step.leads == len(spans)
        assert step.median_days == (None if median is None else median / 86400)
    whole = days(0, 3)
    median = nearest(whole, 0.5)
    assert answer.lead_to_customer.leads == len(whole)
    assert answer.lead_to_customer.median_days == (None if median is None else median / 86400)


def period_start(moment: datetime, unit: str) -> datetime:
    day = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    if unit == "hour":
        return day.replace(hour=moment.hour)
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    return day


async def check_cohorts(
    session: AsyncSession, histories: dict[str, History], w: TimeRange, period: Period
) -> None:
    groups: dict[Any, list[History]] = defaultdict(list)
    for h in histories.values():
        began = entered(h)
        if began is not None and in_window(began, w.start, w.end):
            groups[period_start(began, period.value).date()].append(h)
    expected = [
        (
            day,
            len(group),
            {
                s: sum(1 for h in group if furthest(h) >= RANK[s])
                for s in ("prospect", "opportunity", "customer")
            },
        )
        for day, group in sorted(groups.items())
    ]
    answer = await queries.cohorts(session, w, period)
    got = [
        (c.start, c.leads, {s.value: r.leads for s, r in c.reached.items()}) for c in answer.cohorts
    ]
    assert got == expected
    for cohort in answer.cohorts:
        for reached in cohort.reached.values():
            assert reached.share == reached.leads / cohort.leads


async def check_stage_changes(
    session: AsyncSession, histories: dict[str, History], w: TimeRange, interval: Interval
) -> None:
    buckets: dict[datetime, Counter[tuple[str | None, str]]] = defaultdict(Counter)
    for h in histories.values():
        for c in h.changes:
            if in_window(c.occurred_at, w.start, w.end):
                key = (None if c.from_stage is None else c.from_stage.value, c.to_stage.value)
                buckets[period_start(c.occurred_at, interval.value)][key] += 1
    answer = StageChangeCounts.model_validate(await queries.stage_changes(session, w, interval))
    got = {
        b.start: Counter(
            {
                (None if t.from_stage is None else t.from_stage.value, t.to_stage.value): t.count
                for t in b.transitions
            }
        )
        for b in answer.buckets
    }
    assert got == dict(buckets)
    assert [b.start for b in answer.buckets] == sorted(buckets)
    assert all(b.total == sum(t.count for t in b.transitions) for b in answer.buckets)
    for b in answer.buckets:  # most first, then in funnel order
        order = [(-t.count, rank_of(t.from_stage), rank_of(t.to_stage)) for t in b.transitions]
        assert order == sorted(order)


def rank_of(stage: Stage | None) -> int:
    return -1 if stage is None else list(Stage).index(stage)


async def test_a_rebuild_derives_what_the_batches_kept(sessions: Sessions) -> None:
    """The statements migration 0005 fills an existing database with, over every lead."""
    histories = random_histories(7)
    await record(sessions, histories, 7)

    async def derived() -> tuple[list[Any], list[Any]]:
        async with sessions() as session:
            journeys = (
                await session.execute(select(queries.JOURNEYS).order_by(queries.JOURNEYS.c.lead_id))
            ).all()
            c = queries.CHANGES.c
            ends = (await session.execute(select(c.position, c.left_at).order_by(c.position))).all()
            return list(journeys), list(ends)

    kept = await derived()
    assert len(kept[0]) == len(histories)
    kept_summaries = await summaries(sessions)
    assert all(kept_summaries)
    async with sessions() as session, session.begin():
        await session.execute(delete(queries.JOURNEYS))
        await session.execute(update(queries.CHANGES).values(left_at=None, stay_seconds=None))
        for summary in analytics_summaries.SUMMARIES:
            await session.execute(delete(summary.table))
    async with sessions() as session, session.begin():
        await journeys.rebuild(session)
        await analytics_summaries.rebuild(session)
    assert await derived() == kept
    assert await summaries(sessions) == kept_summaries


async def summaries(sessions: Sessions) -> list[set[Any]]:
    """What batches keep beside the journeys: the stays' columns, the spans and every
    summary's non-zero counts (a count that fell to zero may keep its row)."""
    async with sessions() as session:
        c = queries.CHANGES.c
        stays = select(c.position, c.stay_seconds, c.stay_bucket)
        found = [set((await session.execute(stays)).all())]
        found.append(set((await session.execute(select(analytics_summaries.SPAN_ROWS))).all()))
        for summary in analytics_summaries.SUMMARIES:
            rows = select(summary.table).where(summary.table.c["count"] != 0)
            found.append(set((await session.execute(rows)).all()))
        return found


async def test_the_stay_columns_are_the_python_definitions(sessions: Sessions) -> None:
    """Seconds as Python counts them, the bucket of :func:`analytics.stay_bucket`."""
    histories = random_histories(2)
    await record(sessions, histories, 2)
    async with sessions() as session:
        c = queries.CHANGES.c
        rows = (
            await session.execute(select(c.occurred_at, c.left_at, c.stay_seconds, c.stay_bucket))
        ).all()
        s = analytics_summaries.SPAN_ROWS.c
        spans = (await session.execute(select(s.seconds, s.bucket))).all()
    assert any(left is not None for _, left, _, _ in rows)
    for began, left, seconds, bucket in rows:
        if left is None:
            assert (seconds, bucket) == (None, None)
        else:
            assert seconds == max(0.0, (left - began).total_seconds())
            assert bucket == stay_bucket(seconds)
    assert spans
    assert all(bucket == stay_bucket(seconds) for seconds, bucket in spans)

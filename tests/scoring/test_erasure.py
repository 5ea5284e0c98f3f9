"""Erasing a lead in scoring, without Kafka: what a batch with an erase record emits and
keeps, and a changelog tombstone restoring as no state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from services.scoring import changelog
from services.scoring.changelog import PartitionState
from services.scoring.lead import LeadState
from services.scoring.model import ScoringModel
from services.scoring.settings import ScoringSettings
from services.scoring.state_records import APPLIED_OFFSET_KEY, lead_record
from services.scoring.worker import PartitionScorer, ScoredBatch, ScoringWorker
from shared.events import ERASE_ID_HEADER, ERASE_REQUESTED_AT_HEADER, LEAD_ERASED, Event

ADA, BOB = "ada@example.com", "bob@example.org"
T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
QUALIFIED = {"industry": "saas", "employees": 200, "budget_usd": 20000, "job_level": "vp"}


def event(event_id: str, lead: str, kind: str = "lead.updated", **fields: Any) -> Event:
    return Event(event_id=event_id, type=kind, lead_id=lead, occurred_at=T0, **fields)


def records(events: list[Event], start: int = 0) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(
            topic="t.events",
            partition=0,
            offset=offset,
            key=e.lead_id.encode(),
            value=e.to_json(),
        )
        for offset, e in enumerate(events, start)
    ]


@pytest.fixture
def scorer() -> PartitionScorer:
    producer: Any = None  # scoring a batch sends nothing
    return PartitionScorer(TopicPartition("t.events", 0), producer, PartitionState())


@pytest.fixture
async def worker(model: ScoringModel) -> AsyncIterator[ScoringWorker]:
    """Never started: its consumer is only built (in a running loop, as aiokafka wants)."""
    worker = ScoringWorker(ScoringSettings(topic_namespace="t"), model)
    yield worker
    await worker.consumer.stop()


def keys(batch: ScoredBatch, topic: str) -> list[bytes | None]:
    return [record[0] for record in batch.outputs.get(topic, [])]


async def test_an_erased_lead_is_forgotten_and_the_same_id_starts_a_new_lead(
    worker: ScoringWorker, scorer: PartitionScorer
) -> None:
    first = event("e-1", ADA, traits=QUALIFIED)
    batch = await worker._score(
        scorer,
        records(
            [
                first,
                event("e-2", ADA, "email.clicked"),
                event("b-1", BOB),
                event("erase-1", ADA, LEAD_ERASED),
                first,  # the same event id again: after the erasure it is news
            ]
        ),
    )
    assert batch.applied_offset == 4
    [erasure] = batch.erasures
    assert erasure.key == ADA.encode()
    assert dict(erasure.headers) == {
        ERASE_ID_HEADER: b"erase-1",
        ERASE_REQUESTED_AT_HEADER: b"2026-11-20T10:00:00Z",
    }
    # what was scored for ada before the erasure is not sent: it would follow the tombstones
    scores = [orjson.loads(record[1]) for record in batch.outputs["t.scores"]]
    assert [(s["lead_id"], s["sequence"]) for s in scores] == [(BOB, 1), (ADA, 1)]
    changes = [orjson.loads(record[1]) for record in batch.outputs["t.stage-changes"]]
    assert [(c["lead_id"], c["sequence"], c["from_stage"]) for c in changes] == [
        (BOB, 1, None),
        (ADA, 1, None),
    ]
    state = scorer.state.leads[ADA]
    assert (state.score_sequence, state.change_sequence, set(state.seen)) == (1, 1, {"e-1"})
    assert ADA.encode() in [key for key, _ in batch.changelog]


async def test_an_erasure_ends_in_a_tombstone_and_no_state(
    worker: ScoringWorker, scorer: PartitionScorer
) -> None:
    batch = await worker._score(
        scorer, records([event("e-1", ADA, traits=QUALIFIED), event("erase-1", ADA, LEAD_ERASED)])
    )
    assert ADA not in scorer.state.leads
    assert keys(batch, "t.scores") == keys(batch, "t.stage-changes") == []
    assert [key for key, _ in batch.changelog] == [APPLIED_OFFSET_KEY]
    assert [e.key for e in batch.erasures] == [ADA.encode()]
    # the next batch: the same event id is a new lead's first event, not a duplicate
    later = await worker._score(scorer, records([event("e-1", ADA)], start=2))
    assert keys(later, "t.scores") == [ADA.encode()]  # scored: a new lead, not a duplicate


async def test_erasing_a_lead_never_seen_is_honoured_all_the_same(
    worker: ScoringWorker, scorer: PartitionScorer
) -> None:
    batch = await worker._score(scorer, records([event("erase-1", "nobody", LEAD_ERASED)]))
    assert [e.key for e in batch.erasures] == [b"nobody"]
    assert batch.applied_offset == 0
    assert scorer.state.leads == {}


def test_a_changelog_tombstone_restores_as_no_state() -> None:
    state = PartitionState()
    ada = LeadState(ADA, score_sequence=3)
    changelog.apply_record(state, ADA.encode(), lead_record(ada))
    changelog.apply_record(state, BOB.encode(), lead_record(LeadState(BOB)))
    changelog.apply_record(state, ADA.encode(), None)
    assert set(state.leads) == {BOB}
    changelog.apply_record(state, ADA.encode(), None)  # a tombstone of no state: nothing
    # a later record of the same key is a new lead
    changelog.apply_record(state, ADA.encode(), lead_record(LeadState(ADA)))
    assert state.leads[ADA].score_sequence == 0

"""A changelog written by an earlier version (rules by position) is mapped once: the leads
restored from it are written again in format 3 by the partition's next batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from services.scoring import worker as worker_module
from services.scoring.changelog import PartitionState, apply_record
from services.scoring.model import ScoringModel
from services.scoring.settings import ScoringSettings
from services.scoring.worker import PartitionScorer, ScoringWorker
from tests.scoring.test_lead import FORMAT_2_RECORD

ADA = "ada@example.com"


@pytest.fixture
async def worker(model: ScoringModel) -> AsyncIterator[ScoringWorker]:
    """Never started: its consumer is only built (in a running loop, as aiokafka wants)."""
    worker = ScoringWorker(ScoringSettings(topic_namespace="t"), model)
    yield worker
    await worker.consumer.stop()


def restored(model: ScoringModel, leads: list[str]) -> PartitionState:
    state = PartitionState()
    for lead in leads:
        record = FORMAT_2_RECORD.replace(ADA.encode(), lead.encode())
        apply_record(state, lead.encode(), record, model.rulebook.engagement_ids)
    apply_record(state, b"\x00applied-offset", b'{"offset": 9}')
    return state


def email(offset: int, lead: str = "bob@example.com") -> SimpleNamespace:
    value = orjson.dumps(
        {
            "event_id": f"b-{offset}",
            "type": "email.opened",
            "lead_id": lead,
            "occurred_at": "2025-03-05T10:00:00Z",
        }
    )
    return SimpleNamespace(topic="t.events", partition=0, offset=offset, key=b"b", value=value)


def test_restoring_remembers_which_leads_came_in_an_old_format(model: ScoringModel) -> None:
    state = restored(model, [ADA, "cy@example.com"])
    assert state.legacy == {ADA, "cy@example.com"}
    apply_record(state, b"cy@example.com", None)  # erased: nothing to write again
    assert state.legacy == {ADA}


async def test_the_next_batches_write_old_format_leads_again_in_format_3(
    worker: ScoringWorker, model: ScoringModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "LEGACY_PER_BATCH", 2)
    leads = [f"old-{i}@example.com" for i in range(3)]
    producer: Any = None  # scoring a batch sends nothing
    scorer = PartitionScorer(TopicPartition("t.events", 0), producer, restored(model, leads), 9)

    first = await worker._score(scorer, [email(10)])
    second = await worker._score(scorer, [email(11)])

    written = [
        [
            orjson.loads(value)
            for key, value in batch.changelog
            if key != b"\x00applied-offset" and value is not None
        ]
        for batch in (first, second)
    ]
    assert [sorted(d["lead_id"] for d in records) for records in written] == [
        sorted([*first.rewritten, "bob@example.com"]),
        sorted([*second.rewritten, "bob@example.com"]),
    ]
    assert sorted((*first.rewritten, *second.rewritten)) == leads
    assert all(d["format"] == 3 for records in written for d in records)
    pricing = next(d for d in written[0] if d["lead_id"] != "bob@example.com")
    assert [row[0] for row in pricing["engagement"]["rules"]] == ["pricing-view", "email-click"]
    assert scorer.state.legacy == set()

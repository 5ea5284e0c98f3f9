"""Bad records, duplicates and disorder on real processes: the scores still equal the model's."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from devtools.synthetic import synthetic_stream
from shared.kafka import encode_key, make_producer
from tests.faults.deployment import (
    Deployment,
    Platform,
    assert_stage_changes_exactly_once,
    wait_until_served,
)
from tests.reference import reference
from tests.topics import read_records

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


async def test_poison_records_go_to_dead_letters_and_the_rest_is_scored(
    deployment: Deployment,
) -> None:
    """Written straight to the topic, past ingest's validation: the worker must cope."""
    lead = "poisoned@example.com"
    good = [
        {
            "event_id": f"good-{i}",
            "type": "email.clicked",
            "lead_id": lead,
            "occurred_at": f"2026-11-0{i + 1}T10:00:00Z",
        }
        for i in range(3)
    ]
    poison = [
        b"\x00\x01 not json at all",
        orjson.dumps({**good[0], "event_id": "wrong-type", "occurred_at": 1_700_000_000}),
        orjson.dumps({**good[0], "event_id": "huge", "properties": {"blob": "x" * 900_000}}),
    ]
    deployment.start("scoring")
    pipeline = deployment.start("pipeline")
    producer = make_producer(deployment.settings, name="test-poison")
    await producer.start()
    try:
        topic, key = deployment.settings.topics.events, encode_key(lead)
        await producer.send_and_wait(topic, orjson.dumps(good[0]), key=key)
        for value in poison:
            await producer.send_and_wait(topic, value, key=key)
        for event in good[1:]:
            await producer.send_and_wait(topic, orjson.dumps(event), key=key)
    finally:
        await producer.stop()

    await wait_until_served(pipeline.url, reference(good))
    letters = await read_records(
        deployment.settings, deployment.settings.topics.dead_letters, lambda r: len(r) >= 3
    )
    reasons = [orjson.loads(record.value) for record in letters]
    assert [r["source"]["offset"] for r in reasons] == [1, 2, 3]
    assert "JSON" in reasons[0]["reason"] or "json" in reasons[0]["reason"]
    assert "occurred_at" in reasons[1]["reason"]
    assert "bytes" in reasons[2]["reason"]
    assert reasons[2]["value_truncated"]


async def test_duplicates_and_disorder_give_the_reference_scores(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Batches posted twice, and each lead's events shuffled out of time order."""
    events = list(synthetic_stream(leads=200, events_per_lead=12, seed=40, run_id="dup"))
    rng = random.Random(40)
    by_lead: dict[str, list[dict[str, object]]] = {}
    for event in events:
        by_lead.setdefault(str(event["lead_id"]), []).append(event)
    for lead_events in by_lead.values():
        rng.shuffle(lead_events)
    disordered = [e for lead_events in by_lead.values() for e in lead_events]
    ingest = deployment.start("ingest")
    deployment.start("scoring")
    pipeline = deployment.start("pipeline")
    platform = Platform(ingest.url)
    try:
        for start in range(0, len(disordered), 200):
            batch = disordered[start : start + 200]
            await platform.post(batch)
            if start % 400 == 0:
                await platform.post(batch)  # a platform retrying after a lost response
        await platform.post(rng.sample(disordered, 300))  # and a replay of some old events
        expected = reference(platform.accepted)
        await wait_until_served(pipeline.url, expected)
        await assert_stage_changes_exactly_once(deployment, pipeline.url, expected)
        # Six weeks shuffled: events over 30 days older than their lead's latest cannot be
        # de-duplicated any more. They are not scored, and each one is a dead letter (so is a
        # re-post of a counted event that has since fallen behind the horizon).
        counted = set().union(*(lead.counted for lead in expected.values()))
        never_counted = {str(e["event_id"]) for e in events} - counted
        assert never_counted

        def dead_ids(records: Sequence[Any]) -> set[str]:
            return {orjson.loads(orjson.loads(r.value)["value"])["event_id"] for r in records}

        letters = await read_records(
            deployment.settings,
            deployment.settings.topics.dead_letters,
            lambda r: never_counted <= dead_ids(r),
        )
        assert {orjson.loads(r.value)["reason"].split(":")[0] for r in letters} == {"too old"}
    finally:
        await platform.close()

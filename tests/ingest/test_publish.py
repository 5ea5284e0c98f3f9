"""Events posted to ingest land on the real broker: keyed by lead, intact, all or nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from devtools.broker import LocalKafka, free_port
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.api_keys import format_line, key_digest
from shared.settings import LeadflowSettings
from shared.topic_admin import create_topics
from tests.servers import serving
from tests.topics import read_records

pytestmark = pytest.mark.integration


def event(lead: str, **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event_id": f"e-{uuid.uuid4()}",
        "type": "email.clicked",
        "lead_id": lead,
        "occurred_at": "2026-11-20T10:00:00Z",
        "source": "mailer",
        "properties": {"campaign": "nov", "ünï": ["cödé", 1, None, True]},
        "traits": {"industry": "saas"},
    }
    item.update(changes)
    return item


@pytest.fixture
def ingest_url(kafka_settings: LeadflowSettings) -> Iterator[str]:
    settings = IngestSettings(**kafka_settings.model_dump())
    with serving(create_app(settings)) as url:
        yield url


def values_by_id(records: list[Any]) -> dict[str, dict[str, Any]]:
    return {orjson.loads(r.value)["event_id"]: orjson.loads(r.value) for r in records}


async def test_a_posted_event_lands_keyed_by_lead_with_its_body_intact(
    ingest_url: str, kafka_settings: LeadflowSettings
) -> None:
    sent = event("zoë@example.com")
    async with httpx.AsyncClient(base_url=ingest_url) as client:
        response = await client.post("/v1/events", json=sent)
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "event_ids": [sent["event_id"]]}

    records = await read_records(
        kafka_settings, kafka_settings.topics.events, lambda r: len(r) >= 1
    )
    assert len(records) == 1
    assert records[0].key == "zoë@example.com".encode()
    assert orjson.loads(records[0].value) == sent


async def test_a_batch_of_1000_lands_whole(
    ingest_url: str, kafka_settings: LeadflowSettings
) -> None:
    batch = [event(f"lead-{i % 37}@example.com") for i in range(1000)]
    async with httpx.AsyncClient(base_url=ingest_url, timeout=30) as client:
        response = await client.post("/v1/events/batch", json={"events": batch})
    assert response.status_code == 202
    assert response.json()["accepted"] == 1000

    records = await read_records(
        kafka_settings, kafka_settings.topics.events, lambda r: len(r) >= 1000
    )
    assert values_by_id(records) == {e["event_id"]: e for e in batch}
    assert all(r.key == orjson.loads(r.value)["lead_id"].encode() for r in records)
    # one lead, one partition: the order of a lead's events is kept
    partitions: dict[bytes, set[int]] = {}
    for record in records:
        partitions.setdefault(record.key, set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions.values())


async def test_an_invalid_batch_publishes_nothing(
    ingest_url: str, kafka_settings: LeadflowSettings
) -> None:
    batch = [event(f"lead-{i}") for i in range(50)]
    batch[17]["occurred_at"] = "not a time"
    marker = event("marker")
    async with httpx.AsyncClient(base_url=ingest_url) as client:
        refused = await client.post("/v1/events/batch", json=batch)
        assert refused.status_code == 422
        assert [e["loc"] for e in refused.json()["detail"]] == [["body", 17, "occurred_at"]]
        assert (await client.post("/v1/events", json=marker)).status_code == 202

    records = await read_records(
        kafka_settings,
        kafka_settings.topics.events,
        lambda rs: any(orjson.loads(r.value)["event_id"] == marker["event_id"] for r in rs),
    )
    assert list(values_by_id(records)) == [marker["event_id"]]


async def test_a_batch_with_an_event_the_key_may_not_post_publishes_nothing(
    kafka_settings: LeadflowSettings,
) -> None:
    mailer, crm = "lf_publish-mailer", "lf_publish-crm"
    keys = ";".join(
        format_line(name, scopes, key_digest(key.encode()))
        for name, key, scopes in [
            ("mailer", mailer, ["events:write"]),
            ("crm", crm, ["events:write", "crm:write"]),
        ]
    )
    settings = IngestSettings(**{**kafka_settings.model_dump(), "api_keys": keys})
    batch = [event(f"lead-{i}") for i in range(20)]
    batch[13]["type"] = "deal.won"
    won = event("won", type="deal.won")
    with serving(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            refused = await client.post(
                "/v1/events/batch", json=batch, headers={"X-API-Key": mailer}
            )
            assert refused.status_code == 403
            assert "crm:write needed for deal.won" in refused.json()["detail"]
            marker = await client.post(
                "/v1/events", json=won, headers={"Authorization": f"Bearer {crm}"}
            )
            assert marker.status_code == 202

    records = await read_records(
        kafka_settings,
        kafka_settings.topics.events,
        lambda rs: any(orjson.loads(r.value)["event_id"] == won["event_id"] for r in rs),
    )
    assert list(values_by_id(records)) == [won["event_id"]]


async def test_a_stopped_broker_gives_503_and_a_retry_lands_once_it_is_back(
    tmp_path: Path,
) -> None:
    broker = LocalKafka(tmp_path / "kafka", port=free_port())
    broker.start()
    try:
        base = LeadflowSettings(kafka_bootstrap_servers=broker.bootstrap_servers)
        await create_topics(base)
        settings = IngestSettings(**base.model_dump(), publish_timeout_seconds=3)
        first, second = event("before@example.com"), event("during@example.com")
        with serving(create_app(settings)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                assert (await client.post("/v1/events", json=first)).status_code == 202
                broker.stop()
                refused = await client.post("/v1/events", json=second)
                assert refused.status_code == 503
                assert "Retry-After" in refused.headers
                assert (await client.get("/readyz")).status_code == 503

                broker.start()
                retried = await client.post("/v1/events", json=second)
                assert retried.status_code == 202
                assert (await client.get("/readyz")).status_code == 200

        records = await read_records(
            base,
            base.topics.events,
            lambda r: {first["event_id"], second["event_id"]} <= set(values_by_id(list(r))),
        )
        # the refused attempt may have landed too (at-least-once); the event_id makes it one
        assert set(values_by_id(records)) == {first["event_id"], second["event_id"]}
    finally:
        broker.stop()


async def test_a_lead_lands_on_one_partition_whichever_endpoint_carries_it(
    ingest_url: str, kafka_settings: LeadflowSettings
) -> None:
    """Single events go through the producer's partitioner, batches through ingest's grouping:
    both must put a lead where the other does, or its events could be scored out of order."""
    leads = [f"lead-{i}@example.com" for i in range(12)]
    singles = [event(lead) for lead in leads]
    small = [event(lead) for lead in leads]  # a few per partition: sent record by record
    large = [event(lead) for lead in leads for _ in range(20)]  # a batch per partition
    async with httpx.AsyncClient(base_url=ingest_url, timeout=30) as client:
        for item in singles:
            assert (await client.post("/v1/events", json=item)).status_code == 202
        for items in (small, large):
            assert (await client.post("/v1/events/batch", json=items)).status_code == 202

    total = len(singles) + len(small) + len(large)
    records = await read_records(
        kafka_settings, kafka_settings.topics.events, lambda r: len(r) >= total
    )
    partitions: dict[bytes, set[int]] = {}
    for record in records:
        partitions.setdefault(record.key, set()).add(record.partition)
    assert len(partitions) == len(leads)
    assert all(len(p) == 1 for p in partitions.values())
    assert len(set().union(*partitions.values())) > 1  # the leads do spread


async def test_every_route_writes_the_normalised_lead_id_as_key_and_field(
    ingest_url: str, kafka_settings: LeadflowSettings
) -> None:
    """Native, CloudEvents and Segment alike: one spelling reaches the topic."""
    native = event(" Ada@Example.COM ")
    cloudevent = {
        "specversion": "1.0",
        "id": "ce-ada",
        "type": "email.opened",
        "source": "mailer",
        "subject": "ADA@example.com",
        "time": "2026-11-20T10:00:00Z",
    }
    segment = {"userId": "Ada@EXAMPLE.com", "event": "Email Opened", "messageId": "seg-ada"}
    async with httpx.AsyncClient(base_url=ingest_url) as client:
        assert (await client.post("/v1/events", json=native)).status_code == 202
        assert (await client.post("/v1/events/batch", json=[cloudevent])).status_code == 202
        assert (await client.post("/v1/track", json=segment)).status_code == 200
    records = await read_records(
        kafka_settings, kafka_settings.topics.events, lambda r: len(r) >= 3
    )
    assert {r.key for r in records} == {b"ada@example.com"}
    assert {orjson.loads(r.value)["lead_id"] for r in records} == {"ada@example.com"}


async def test_with_the_none_rule_ids_keep_their_case(kafka_settings: LeadflowSettings) -> None:
    settings = IngestSettings(**{**kafka_settings.model_dump(), "lead_id_normalization": "none"})
    with serving(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/v1/events", json=event(" Ada@Example.COM "))
    assert response.status_code == 202
    records = await read_records(
        kafka_settings, kafka_settings.topics.events, lambda r: len(r) >= 1
    )
    assert records[0].key == b"Ada@Example.COM"

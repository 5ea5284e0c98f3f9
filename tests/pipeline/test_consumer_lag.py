"""Both consumer groups at rest: committed offsets at the end of every partition (lag 0),
and the lag gauges of both say so.

Scoring writes its outputs in transactions, and each transaction ends in a commit
marker that takes an offset of its own: a group that commits the last record's
offset plus one stays one behind forever, and a lag alert on it never clears.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY

from services.pipeline.consumer import PipelineConsumer
from services.pipeline.migrate import migrate
from services.pipeline.settings import PipelineSettings
from services.scoring.model import load_model
from services.scoring.settings import ScoringSettings
from services.scoring.worker import ScoringWorker
from shared.database import Database
from shared.kafka import encode_key, make_producer
from shared.settings import LeadflowSettings
from tests.waiting import eventually

pytestmark = pytest.mark.integration

Offsets = dict[TopicPartition, int]
PARTITIONS = 3
"""As ``kafka_settings`` creates the topics."""
QUALIFIED = {"industry": "saas", "employees": 200, "budget_usd": 20000, "job_level": "vp"}


@asynccontextmanager
async def running(*loops: ScoringWorker | PipelineConsumer) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(loop.run()) for loop in loops]
    try:
        yield
    finally:
        for loop in loops:
            loop.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)


async def post_events(settings: LeadflowSettings, leads: int) -> None:
    """As ingest does: an idempotent producer, keyed by lead, several leads per partition."""
    producer = make_producer(settings, name="test-ingest")
    await producer.start()
    try:
        now = datetime.now(UTC).isoformat()
        for n in range(leads):
            lead = f"lead-{n}@example.com"
            value = orjson.dumps(
                {"event_id": f"{lead}/0", "type": "lead.updated", "lead_id": lead,
                 "occurred_at": now, "traits": QUALIFIED}
            )  # fmt: skip
            await producer.send_and_wait(settings.topics.events, value, key=encode_key(lead))
    finally:
        await producer.stop()


async def end_offsets(settings: LeadflowSettings, topics: Iterable[str]) -> Offsets:
    """Where the next record of each partition would go: markers included."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for topic in topics for p in range(PARTITIONS)]
        ends: Offsets = await consumer.end_offsets(partitions)
        return ends
    finally:
        await consumer.stop()


async def committed(settings: LeadflowSettings, group: str) -> Offsets:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


async def lags(settings: LeadflowSettings, group: str, topics: list[str]) -> Offsets:
    """End offset minus committed offset per partition (an unread empty partition: 0)."""
    ends = await end_offsets(settings, topics)
    done = await committed(settings, group)
    return {tp: end - done.get(tp, 0) for tp, end in ends.items()}


async def test_both_groups_commit_to_the_end_of_their_partitions_once_traffic_stops(
    kafka_settings: LeadflowSettings, tmp_path: Path
) -> None:
    namespace = kafka_settings.topic_namespace
    groups = {"scoring_group": f"{namespace}-scoring", "pipeline_group": f"{namespace}-pipeline"}
    common = {**kafka_settings.model_dump(), **groups}
    scoring = ScoringSettings(**common)
    pipeline = PipelineSettings(**common, database_url=f"sqlite+aiosqlite:///{tmp_path}/db.sqlite")
    topics = kafka_settings.topics
    await migrate(pipeline.database_url)
    database = Database.connect(pipeline.database_url)
    consumer = PipelineConsumer(pipeline, database)
    try:
        async with running(ScoringWorker(scoring, load_model()), consumer):
            await post_events(kafka_settings, leads=30)
            outputs = [topics.scores, topics.stage_changes]

            async def both() -> tuple[Offsets, Offsets]:
                return (
                    await lags(kafka_settings, groups["scoring_group"], [topics.events]),
                    await lags(kafka_settings, groups["pipeline_group"], outputs),
                )

            scoring_lag, pipeline_lag = await eventually(
                both, lambda lag: all(v == 0 for v in {**lag[0], **lag[1]}.values()), timeout=60
            )
            ends = await end_offsets(kafka_settings, outputs)
            assert sum(ends.values()) > 30  # records and markers did flow through

            inputs = await end_offsets(kafka_settings, [topics.events])
            read = [("leadflow_pipeline_consumer_lag", tp) for tp in ends if ends[tp]]
            read += [("leadflow_scoring_consumer_lag", tp) for tp in inputs if inputs[tp]]

            def gauges() -> list[float | None]:
                return [
                    REGISTRY.get_sample_value(
                        name, {"topic": tp.topic, "partition": str(tp.partition)}
                    )
                    for name, tp in read
                ]

            await eventually(
                lambda: asyncio.sleep(0, gauges()),
                lambda values: all(v == 0 for v in values),
                timeout=10,
            )
    finally:
        await database.dispose()
    assert set(scoring_lag.values()) == {0}
    assert set(pipeline_lag.values()) == {0}

"""The pipeline consumer on the real broker: redelivered and stale records change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from services.pipeline.consumer import PipelineConsumer
from services.pipeline.migrate import migrate
from services.pipeline.settings import PipelineSettings
from services.pipeline.store import get_lead
from shared.database import Database
from shared.events import ScoreUpdate, Stage, StageChange
from shared.kafka import encode_key, make_producer
from shared.settings import LeadflowSettings
from tests.pipeline.conftest import ScratchDatabases
from tests.pipeline.records import score_update, snapshot, stage_change
from tests.waiting import eventually

pytestmark = pytest.mark.integration


@asynccontextmanager
async def consuming(settings: PipelineSettings) -> AsyncIterator[Database]:
    await migrate(settings.database_url)
    database = Database.connect(settings.database_url)
    consumer = PipelineConsumer(settings, database)
    task = asyncio.create_task(consumer.run())
    try:
        yield database
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 30)
        await database.dispose()


async def publish(settings: LeadflowSettings, records: Sequence[ScoreUpdate | StageChange]) -> None:
    """As scoring does: scores and stage changes on their topics, keyed by lead."""
    producer = make_producer(settings, name="test-scoring")
    await producer.start()
    try:
        for record in records:
            topics = settings.topics
            topic = topics.scores if isinstance(record, ScoreUpdate) else topics.stage_changes
            value = record.model_dump_json().encode()
            await producer.send_and_wait(topic, value, key=encode_key(record.lead_id))
    finally:
        await producer.stop()


async def wait_for_lead(database: Database, lead_id: str) -> None:
    async def fetch() -> object:
        async with database.sessions() as session:
            return await get_lead(session, lead_id)

    await eventually(fetch, lambda lead: lead is not None, timeout=60)


async def test_redelivered_and_older_records_leave_the_database_unchanged(
    kafka_settings: LeadflowSettings, scratch_databases: ScratchDatabases
) -> None:
    settings = PipelineSettings(
        **kafka_settings.model_dump(), database_url=await scratch_databases.create()
    )
    lead = "ada@example.com"
    first: list[ScoreUpdate | StageChange] = [
        stage_change(lead, 1, Stage.LEAD),
        score_update(lead, 1, 20.0),
        stage_change(lead, 2, Stage.PROSPECT, Stage.LEAD, total=60.0),
        score_update(lead, 2, 60.0, Stage.PROSPECT),
        score_update("marker-1", 1, 1.0),
    ]
    again: list[ScoreUpdate | StageChange] = [
        stage_change(lead, 2, Stage.PROSPECT, Stage.LEAD, total=60.0),
        stage_change(lead, 1, Stage.LEAD),
        score_update(lead, 1, 20.0),  # older than what the database holds
        score_update(lead, 2, 60.0, Stage.PROSPECT),
        score_update("marker-2", 1, 1.0),
    ]
    async with consuming(settings) as database:
        await publish(settings, first)
        await wait_for_lead(database, "marker-1")
        before = await snapshot(database.sessions)
        await publish(settings, again)
        await wait_for_lead(database, "marker-2")
        after = await snapshot(database.sessions)
        async with database.sessions() as session:
            current = await get_lead(session, lead)

    def without_marker_2(rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {table: [r for r in rs if "marker-2" not in r] for table, rs in rows.items()}

    assert without_marker_2(after) == before
    assert current is not None
    assert (current.stage, current.total) == (Stage.PROSPECT, 60.0)

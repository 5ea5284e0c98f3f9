"""The pipeline consumer on the real broker: redelivered and stale records change nothing,
and a record that does not decode is a dead letter, not a silent skip."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from services.pipeline.accounts_store import get_account
from services.pipeline.consumer import PipelineConsumer
from services.pipeline.lead_reads import get_lead
from services.pipeline.migrate import migrate
from services.pipeline.settings import PipelineSettings
from shared.database import Database
from shared.events import ScoreUpdate, Stage, StageChange
from shared.kafka import encode_key, make_consumer, make_producer
from shared.settings import LeadflowSettings
from tests.pipeline.conftest import ScratchDatabases
from tests.pipeline.records import READ_AT, account_score, score_update, snapshot, stage_change
from tests.topics import read_records
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
            return await get_lead(session, lead_id, READ_AT)

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
            current = await get_lead(session, lead, READ_AT)

    def without_marker_2(rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {table: [r for r in rs if "marker-2" not in r] for table, rs in rows.items()}

    assert without_marker_2(after) == before
    assert current is not None
    assert (current.stage, current.total) == (Stage.PROSPECT, 60.0)


async def committed(settings: PipelineSettings, tp: TopicPartition) -> int:
    consumer = make_consumer(settings, name="test-offsets", group_id=settings.pipeline_group)
    await consumer.start()
    try:
        return await consumer.committed(tp) or 0
    finally:
        await consumer.stop()


async def test_a_record_that_does_not_decode_is_a_dead_letter_and_the_next_is_written(
    kafka_settings: LeadflowSettings, scratch_databases: ScratchDatabases
) -> None:
    settings = PipelineSettings(
        **kafka_settings.model_dump(), database_url=await scratch_databases.create()
    )
    topics, key = settings.topics, encode_key("poison@example.com")
    wrong_shape = orjson.dumps(
        {
            **orjson.loads(score_update("poison@example.com", 1, 5.0).model_dump_json()),
            "sequence": "one",
        }
    )
    producer = make_producer(settings, name="test-poison")
    await producer.start()
    try:  # one partition per topic: the offsets below are the records' own
        await producer.send_and_wait(topics.stage_changes, b"{not json", key=key, partition=0)
        await producer.send_and_wait(topics.scores, wrong_shape, key=key, partition=0)
        await producer.send_and_wait(topics.scores, None, key=b"", partition=0)  # no lead
        await producer.send_and_wait(topics.scores, None, key=b"nobody", partition=0)  # erasure
    finally:
        await producer.stop()
    marker = score_update("marker@example.com", 1, 1.0)
    async with consuming(settings) as database:
        await publish(settings, [marker])
        await wait_for_lead(database, marker.lead_id)
        letters = await read_records(settings, topics.dead_letters, lambda r: len(r) >= 3)
        scores_tp = TopicPartition(topics.scores, 0)
        await eventually(lambda: committed(settings, scores_tp), lambda at: at >= 3, timeout=30)

    reasons = sorted((orjson.loads(r.value) for r in letters), key=lambda d: d["source"]["topic"])
    assert [(d["source"]["topic"], d["source"]["offset"]) for d in reasons] == [
        (topics.scores, 0),
        (topics.scores, 1),
        (topics.stage_changes, 0),
    ]
    assert "sequence" in reasons[0]["reason"]
    assert reasons[0]["key"] == "poison@example.com"
    assert reasons[1]["reason"] == "ValueError: an erasure signal without a key names no lead"
    assert reasons[1]["key"] == ""
    assert reasons[2]["reason"].startswith("ValidationError: ")
    assert reasons[2]["value"] == "{not json"
    assert len(letters) == 3  # the keyed null record was an erasure signal, not a dead letter


async def test_account_scores_are_written_once_and_bad_ones_are_dead_letters(
    kafka_settings: LeadflowSettings, scratch_databases: ScratchDatabases
) -> None:
    settings = PipelineSettings(
        **kafka_settings.model_dump(), database_url=await scratch_databases.create()
    )
    topics, key = settings.topics, encode_key("acme.com")
    newer = account_score("acme.com", 2, {"ada@acme.com": 60.0, "bob@acme.com": 10.0})
    older = account_score("acme.com", 1, {"cyd@acme.com": 99.0})
    producer = make_producer(settings, name="test-accounts")
    await producer.start()
    try:  # one partition: the offsets below are the records' own
        for value in (b"{not json", None, newer.model_dump_json().encode()):
            await producer.send_and_wait(topics.account_scores, value, key=key, partition=0)
        for again in (newer, older):  # redelivered, then stale: neither changes anything
            value = again.model_dump_json().encode()
            await producer.send_and_wait(topics.account_scores, value, key=key, partition=0)
    finally:
        await producer.stop()
    marker = score_update("marker@example.com", 1, 1.0)
    async with consuming(settings) as database:
        await publish(settings, [marker])
        await wait_for_lead(database, marker.lead_id)
        letters = await read_records(settings, topics.dead_letters, lambda r: len(r) >= 2)
        accounts_tp = TopicPartition(topics.account_scores, 0)
        await eventually(lambda: committed(settings, accounts_tp), lambda at: at >= 5, timeout=30)
        async with database.sessions() as session:
            found = await get_account(session, "acme.com")

    assert found is not None
    assert (found.sequence, found.total) == (2, 70.0)
    assert [member.lead_id for member in found.members] == ["ada@acme.com", "bob@acme.com"]
    reasons = sorted((orjson.loads(r.value) for r in letters), key=lambda d: d["source"]["offset"])
    assert [(d["source"]["topic"], d["source"]["offset"]) for d in reasons] == [
        (topics.account_scores, 0),
        (topics.account_scores, 1),
    ]
    assert reasons[0]["reason"].startswith("ValidationError: ")
    assert reasons[1]["reason"] == "ValueError: a record without a value is not an account score"
    assert reasons[1]["key"] == "acme.com"

"""aiokafka 0.14 against the local Kafka 4 broker: what scoring's exactly-once rests on."""

from __future__ import annotations

import contextlib

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, ProducerFenced

from shared.kafka import make_producer
from shared.settings import LeadflowSettings
from tests.topics import read_records

pytestmark = pytest.mark.integration


async def test_transactions_commit_abort_offsets_and_fencing(
    kafka_settings: LeadflowSettings,
) -> None:
    topic = kafka_settings.topics.scores
    tp = TopicPartition(kafka_settings.topics.events, 0)
    group = f"{kafka_settings.topic_namespace}-group"
    first = make_producer(kafka_settings, name="t1", transactional_id="txn-test")
    await first.start()

    async with first.transaction():  # committed: visible, with its offsets
        await first.send(topic, b"committed", key=b"k", partition=0)
        await first.send_offsets_to_transaction({tp: 42}, group)
    await first.begin_transaction()  # aborted: invisible to read_committed readers
    await first.send(topic, b"aborted", key=b"k", partition=0)
    await first.abort_transaction()

    second = make_producer(kafka_settings, name="t2", transactional_id="txn-test")
    await second.start()  # same transactional id: the first one is now a zombie
    with pytest.raises(ProducerFenced):
        async with first.transaction():
            await first.send(topic, b"zombie", key=b"k", partition=0)
    with contextlib.suppress(KafkaError):  # a fenced producer fails even to stop
        await first.stop()
    async with second.transaction():
        await second.send(topic, b"successor", key=b"k", partition=0)
    await second.stop()

    records = await read_records(kafka_settings, topic, lambda r: len(r) >= 2)
    assert [r.value for r in records] == [b"committed", b"successor"]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    assert offsets[tp].offset == 42

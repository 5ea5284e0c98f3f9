"""The Kafka helpers: the cached partitioner, batched sends, the idle-first poll."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from shared.kafka import (
    KeyPartitioner,
    make_consumer,
    make_producer,
    poll_idle_first,
    send_as_batches,
)
from shared.settings import LeadflowSettings
from tests.topics import read_records


@given(key=st.binary(max_size=300), partitions=st.integers(1, 64))
def test_the_partitioner_chooses_what_the_default_one_chooses(key: bytes, partitions: int) -> None:
    every = list(range(partitions))
    cached = KeyPartitioner(max_keys=4)
    first, second = cached(key, every, every), cached(key, every, every)
    assert first == second == DefaultPartitioner()(key, every, every)


def test_the_partitioner_forgets_keys_past_its_bound() -> None:
    cached = KeyPartitioner(max_keys=3)
    for index in range(10):
        cached(f"lead-{index}".encode(), [0, 1, 2], [0, 1, 2])
    assert len(cached._hashes) <= 3


@pytest.mark.integration
@pytest.mark.parametrize("compression", ["none", "zstd", "lz4"])
async def test_batches_land_whole_and_in_order_in_a_transaction(
    kafka_settings: LeadflowSettings, compression: str
) -> None:
    settings = kafka_settings.model_copy(update={"kafka_compression": compression})
    topics = settings.topics
    topic = {"none": topics.scores, "zstd": topics.stage_changes, "lz4": topics.dead_letters}[
        compression
    ]
    producer = make_producer(
        settings,
        name="batches",
        transactional_id=f"batches-{compression}",
        max_batch_size=16 * 1024,
    )
    await producer.start()
    try:
        records = [(f"lead-{i % 7}".encode(), f"{i:05d}".encode() * 100) for i in range(600)]
        records.insert(300, (b"big", b"x" * 20_000))  # larger than a batch: one of its own
        async with producer.transaction():
            deliveries = await send_as_batches(producer, topic, 1, records)
            assert len(deliveries) > 2  # 320 KB in batches of 16 KB
            for delivery in deliveries:
                await delivery
    finally:
        await producer.stop()
    landed = await read_records(settings, topic, lambda r: len(r) >= 601)
    assert [(r.partition, r.key, r.value) for r in landed] == [(1, k, v) for k, v in records]


@pytest.mark.integration
async def test_idle_partitions_are_polled_before_the_one_being_committed(
    kafka_settings: LeadflowSettings,
) -> None:
    topic = kafka_settings.topics.events
    producer = make_producer(kafka_settings, name="idle-first")
    await producer.start()
    try:
        for partition in (0, 1):
            records = [(b"k", f"{partition}-{i}".encode()) for i in range(200)]
            await asyncio.gather(*await send_as_batches(producer, topic, partition, records))
    finally:
        await producer.stop()
    consumer = make_consumer(kafka_settings, name="idle-first", group_id=None)
    await consumer.start()
    try:
        both = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        consumer.assign(both)
        await consumer.seek_to_beginning(*both)
        for tp in both:  # until each partition has records buffered
            assert await consumer.getmany(tp, timeout_ms=10_000, max_records=1)
        # aiokafka drains one partition's buffer before the next: the reason for the policy
        (first,) = await consumer.getmany(max_records=5)
        (other,) = [tp for tp in both if tp != first]
        on_its_way = asyncio.get_running_loop().create_future()  # first's transaction
        idle_first = await poll_idle_first(
            consumer, {first: on_its_way, other: None}, max_records=5
        )
        assert list(idle_first) == [other]
        plain = await poll_idle_first(consumer, {first: None, other: None}, max_records=5)
        assert list(plain) == [first]
    finally:
        await consumer.stop()

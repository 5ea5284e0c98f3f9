"""Reading the history in ``leadflow.events``: the offsets each partition still holds, and
its records from the earliest one up to an offset, as the replays need them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aiokafka import ConsumerRecord, TopicPartition

from shared.kafka import make_consumer
from shared.settings import LeadflowSettings
from shared.topic_admin import partitions_of


@dataclass(frozen=True, slots=True)
class PartitionSpan:
    """The offsets a partition of ``leadflow.events`` holds: ``[earliest, end)``."""

    partition: int
    earliest: int
    end: int

    @property
    def complete(self) -> bool:
        """Whether the partition still holds its first record (nothing lost to retention)."""
        return self.earliest == 0


async def partition_spans(
    settings: LeadflowSettings, partitions: Sequence[int] | None = None
) -> list[PartitionSpan]:
    topic = settings.topics.events
    if partitions is None:
        partitions = await partitions_of(settings, topic)
    consumer = make_consumer(settings, name="events-spans", group_id=None)
    try:
        await consumer.start()  # inside: a start that fails still stops its client
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        earliest = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return [PartitionSpan(tp.partition, earliest[tp], end[tp]) for tp in tps]


async def read_until(
    settings: LeadflowSettings, partition: int, end: int, timeout: float = 600.0
) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """The records of ``partition`` from its earliest offset up to ``end`` (exclusive), in
    batches, in offset order. Its own consumer, assigned, no group: nothing is committed."""
    topic = settings.topics.events
    tp = TopicPartition(topic, partition)
    consumer = make_consumer(
        settings,
        name="events-replay",
        group_id=None,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    try:
        await consumer.start()  # inside: a start that fails still stops its client
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + timeout
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}[{partition}] took over {timeout}s")
            batches = await consumer.getmany(tp, timeout_ms=500, max_records=20_000)
            records = [r for r in batches.get(tp, []) if r.offset < end]
            if records:
                yield records
    finally:
        await consumer.stop()

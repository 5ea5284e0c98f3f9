"""Reading what landed on a topic, for assertions: wait on a condition, with a timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import TopicPartition

from shared.kafka import make_consumer
from shared.settings import LeadflowSettings
from shared.topic_admin import partitions_of


async def read_records(
    settings: LeadflowSettings,
    topic: str,
    until: Callable[[Sequence[Any]], bool],
    timeout: float = 30.0,
) -> list[Any]:
    """Records of ``topic`` from the beginning (read_committed) until ``until(records)``."""
    consumer = make_consumer(settings, topic, name="test-reader", group_id=None)
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while not until(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: condition not met after {len(records)} records")
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return records


async def read_to_end(settings: LeadflowSettings, topic: str) -> list[Any]:
    """Every committed record of ``topic``, up to its end offsets now (read_committed)."""
    tps = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    consumer = make_consumer(settings, name="test-read-all", group_id=None)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"{topic}: not read to its end in 60 s"
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records

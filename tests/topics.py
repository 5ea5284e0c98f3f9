"""Reading what landed on a topic, for assertions: wait on a condition, with a timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from shared.kafka import make_consumer
from shared.settings import LeadflowSettings


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

"""What several cases share: running repeated measurements, producing, HTTP clients."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
from aiokafka import AIOKafkaProducer

from bench.stats import write
from shared.kafka import make_producer
from shared.settings import LeadflowSettings

Measure = Callable[[], Awaitable[float]]


def run_id() -> str:
    """Short on purpose: it is part of every lead id and event id of the payload."""
    return uuid.uuid4().hex[:6]


async def repeat(
    case: str, sides: dict[str, Measure], runs: int, warmups: int
) -> dict[str, list[float]]:
    """Warm each side up, then run the sides in turn, ``runs`` times.

    Interleaving (A B A B ...) rather than A A A B B B keeps drift of the machine (page
    cache, JIT, the broker's log segments) from landing on one side only.
    """
    for index in range(warmups):
        for name, measure in sides.items():
            value = await measure()
            write(f"  {case}: warm-up {index + 1} {name}: {value:,.1f}")
    results: dict[str, list[float]] = {name: [] for name in sides}
    for index in range(runs):
        for name, measure in sides.items():
            value = await measure()
            results[name].append(value)
            write(f"  {case}: run {index + 1}/{runs} {name}: {value:,.1f}")
    return results


async def started_producer(
    settings: LeadflowSettings, name: str, *, transactional_id: str | None = None
) -> AIOKafkaProducer:
    producer = make_producer(settings, name=name, transactional_id=transactional_id)
    await producer.start()
    return producer


async def produce_all(
    producer: AIOKafkaProducer,
    topic: str,
    records: Sequence[tuple[bytes, bytes]],
    *,
    batch: int = 1000,
    in_flight: int = 4,
) -> float:
    """Send every record, ``batch`` at a time with ``in_flight`` batches outstanding, each
    batch awaited whole (as ingest awaits a request's events); returns records/s."""
    batches = [records[i : i + batch] for i in range(0, len(records), batch)]
    queue = iter(batches)

    async def sender() -> None:
        for chunk in queue:
            deliveries = [await producer.send(topic, value, key=key) for key, value in chunk]
            await asyncio.gather(*deliveries)

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(in_flight)))
    return len(records) / (time.perf_counter() - started)


def http_session(connections: int = 256) -> aiohttp.ClientSession:
    """The load generator's client: aiohttp (C parser, keep-alive pool), no timeouts
    shorter than a slow run could need.

    Idle connections are dropped after 2 s, before uvicorn drops them (5 s): a connection
    the server is closing, reused for a batch after a pause (a case waiting for the
    services to catch up), failed that batch's request."""
    connector = aiohttp.TCPConnector(limit=connections, force_close=False, keepalive_timeout=2)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120), raise_for_status=False
    )


async def post_batch(client: aiohttp.ClientSession, ingest_url: str, body: bytes) -> int:
    """``POST /v1/events/batch`` of a JSON array; the status (body read: the connection is
    reused)."""
    async with client.post(
        f"{ingest_url}/v1/events/batch", data=body, headers={"content-type": "application/json"}
    ) as response:
        await response.read()
        return response.status

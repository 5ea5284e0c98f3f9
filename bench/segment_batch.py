"""ingest, Segment batch: ``POST /v1/batch`` of 100 Segment calls, beside the native batch.

The same events both ways in the same run, on the same service and broker: as native
envelopes to ``POST /v1/events/batch``, and as the Segment calls an SDK would send for
them (``identify`` for attribute updates, ``page`` for page views, ``track`` for the
rest) to ``POST /v1/batch``, plain and gzipped as the SDKs send them. 100 per request
both ways: the SDKs' default upload size.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from bench.common import http_session, post_batch, repeat, run_id
from bench.env import BenchEnv, Config
from bench.payload import batch_bodies, bench_events
from bench.stats import Row, Summary, Target

BATCH = 100
IN_FLIGHT = 4


def segment_call(event: dict[str, Any]) -> dict[str, Any]:
    """The call an SDK would send for ``event``."""
    call: dict[str, Any] = {
        "messageId": event["event_id"],
        "userId": event["lead_id"],
        "timestamp": event["occurred_at"],
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
    }
    if event["type"] == "lead.updated":
        return {**call, "type": "identify", "traits": event.get("traits", {})}
    if event["type"] == "page.viewed":
        return {**call, "type": "page", "properties": event.get("properties", {})}
    return {**call, "type": "track", "event": event["type"], "properties": event["properties"]}


def segment_bodies(events: Sequence[dict[str, Any]], compress: bool) -> list[bytes]:
    bodies = []
    for start in range(0, len(events), BATCH):
        calls = [segment_call(event) for event in events[start : start + BATCH]]
        body = orjson.dumps({"batch": calls, "sentAt": calls[-1]["timestamp"]})
        bodies.append(gzip.compress(body) if compress else body)
    return bodies


async def post_segment(
    client: aiohttp.ClientSession, ingest_url: str, body: bytes, compress: bool
) -> int:
    headers = {"content-type": "application/json"}
    if compress:
        headers["content-encoding"] = "gzip"
    async with client.post(f"{ingest_url}/v1/batch", data=body, headers=headers) as response:
        await response.read()
        return response.status


async def run(env: BenchEnv, config: Config) -> list[Row]:
    count = config.size(quick=20_000, full=100_000)
    settings = await env.namespace("segment-batch")
    events = bench_events(count, run_id=run_id())
    native_bodies = batch_bodies(events, BATCH)
    plain_bodies = segment_bodies(events, compress=False)
    gzip_bodies = segment_bodies(events, compress=True)
    ingest = env.start_service("ingest", env.service_env(settings, LEADFLOW_LOG_LEVEL="WARNING"))
    await env.wait_ready(ingest)

    async def measure(bodies: list[bytes], segment: bool, compress: bool = False) -> float:
        queue = iter(bodies)
        expected = 200 if segment else 202
        async with http_session(IN_FLIGHT) as client:

            async def poster() -> None:
                for body in queue:
                    if segment:
                        status = await post_segment(client, ingest.url, body, compress)
                    else:
                        status = await post_batch(client, ingest.url, body)
                    if status != expected:
                        raise RuntimeError(f"ingest answered {status}")

            started = time.perf_counter()
            await asyncio.gather(*(poster() for _ in range(IN_FLIGHT)))
            return count / (time.perf_counter() - started)

    async def native() -> float:
        return await measure(native_bodies, segment=False)

    async def segment_plain() -> float:
        return await measure(plain_bodies, segment=True)

    async def segment_gzip() -> float:
        return await measure(gzip_bodies, segment=True, compress=True)

    try:
        results = await repeat(
            "segment_batch",
            {"native": native, "segment": segment_plain, "segment_gzip": segment_gzip},
            config.runs,
            config.warmups,
        )
    finally:
        await env.stop(ingest)
        await env.drop_namespace(settings)
    extra = {"events_per_run": count, "batch_events": BATCH, "in_flight_requests": IN_FLIGHT}
    baseline = Summary(results["native"])
    return [
        Row(
            "segment_batch",
            "events accepted, Segment /v1/batch (100/request)",
            "events/s",
            Summary(results["segment"]),
            baseline_name="native /v1/events/batch (100/request)",
            baseline=baseline,
            target=Target("ratio_min", 0.8),
            extra=extra,
        ),
        Row(
            "segment_batch",
            "events accepted, Segment /v1/batch gzipped (100/request)",
            "events/s",
            Summary(results["segment_gzip"]),
            baseline_name="native /v1/events/batch (100/request)",
            baseline=baseline,
            target=Target("ratio_min", 0.8),
            extra=extra,
        ),
    ]

"""ingest, single: ``POST /v1/events`` one event per request.

Two measurements per run, each beside two bare Starlette endpoints served by uvicorn the
same way: ``bench/bare_app.py`` (parse the body, answer 202) and ``bench/bare_kafka_app.py``
(parse it, send it with ingest's producer settings, answer 202 once Kafka has it: the same
I/O as ingest):

- capacity: a closed loop of ``CONNECTIONS`` clients posting back to back, requests/s;
- a fixed offered rate (open loop: requests leave on a schedule, whatever the answers
  do, and latency counts from the scheduled time, so a stall is not hidden by the client
  waiting for it): requests/s achieved, p50 and p99. The rate is half of what ingest
  sustained in its first capacity run (``--single-rate`` fixes it instead).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence

import aiohttp
import orjson

from bench.common import Measure, http_session, repeat, run_id
from bench.env import BenchEnv, Config, CpuMeter
from bench.payload import bench_events
from bench.stats import Row, Summary, Target, percentile
from devtools.processes import ServiceProcess

CONNECTIONS = 32
HEADERS = {"content-type": "application/json"}


async def closed_loop(url: str, bodies: Sequence[bytes], seconds: float) -> float:
    """Requests/s of ``CONNECTIONS`` clients posting back to back for ``seconds``."""
    done = 0
    stop_at = time.perf_counter() + seconds
    async with http_session(CONNECTIONS) as client:

        async def loop(offset: int) -> None:
            nonlocal done
            index = offset
            while time.perf_counter() < stop_at:
                body = bodies[index % len(bodies)]
                index += CONNECTIONS
                async with client.post(url, data=body, headers=HEADERS) as response:
                    await response.read()
                    if response.status != 202:
                        raise RuntimeError(f"{url} answered {response.status}")
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop(i) for i in range(CONNECTIONS)))
        return done / (time.perf_counter() - started)


async def open_loop(
    url: str, bodies: Sequence[bytes], rate: float, seconds: float
) -> tuple[float, list[float], int]:
    """Offer ``rate`` requests/s for ``seconds``; returns achieved requests/s, latencies
    (ms, from the scheduled send time) and the number of failed requests."""
    total = int(rate * seconds)
    latencies: list[float] = []
    failed = 0
    async with http_session(1024) as client:

        async def one(index: int, scheduled: float) -> None:
            nonlocal failed
            try:
                async with client.post(url, data=bodies[index % len(bodies)], headers=HEADERS) as r:
                    await r.read()
                    ok = r.status == 202
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append((time.perf_counter() - scheduled) * 1000)
            else:
                failed += 1

        tasks = []
        started = time.perf_counter()
        for index in range(total):
            scheduled = started + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies, failed


async def run(env: BenchEnv, config: Config) -> list[Row]:
    settings = await env.namespace("ingest-single")
    events = bench_events(config.size(quick=20_000, full=50_000), run_id=run_id())
    bodies = [orjson.dumps(event) for event in events]
    ingest = env.start_service("ingest", env.service_env(settings, LEADFLOW_LOG_LEVEL="WARNING"))
    bare = env.start_module("bench.bare_app", {})
    bare_kafka = env.start_module(
        "bench.bare_kafka_app", env.service_env(settings, LEADFLOW_LOG_LEVEL="WARNING")
    )
    await env.wait_ready(ingest, bare, bare_kafka)
    capacity_seconds = config.seconds(quick=3, full=8)
    rate_seconds = config.seconds(quick=5, full=15)
    rate = {"value": config.single_rate}
    sides = {"leadflow": ingest, "bare": bare, "bare_kafka": bare_kafka}
    latency: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
    achieved: dict[str, list[float]] = {side: [] for side in sides}
    failures: dict[str, int] = dict.fromkeys(sides, 0)
    cpu: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    broker_pid = env.kafka.process.pid if env.kafka.process else None

    def capacity(name: str, process: ServiceProcess) -> Measure:
        async def measure() -> float:
            meter = CpuMeter(
                {"server": process.process.pid if process.process else None, "broker": broker_pid,
                 "client": os.getpid()}
            )  # fmt: skip
            value = await closed_loop(f"{process.url}/v1/events", bodies, capacity_seconds)
            cpu[name].append(meter.utilisation())
            if name == "leadflow" and not rate["value"]:
                rate["value"] = max(50.0, round(value / 2 / 50) * 50)  # half of capacity
            return value

        return measure

    def at_rate(name: str, process: ServiceProcess) -> Measure:
        async def measure() -> float:
            value, samples, failed = await open_loop(
                f"{process.url}/v1/events", bodies, rate["value"], rate_seconds
            )
            achieved[name].append(value)
            latency[name].append((percentile(samples, 50), percentile(samples, 99)))
            failures[name] += failed
            return value

        return measure

    try:
        capacities = await repeat(
            "ingest_single capacity",
            {side: capacity(side, process) for side, process in sides.items()},
            config.runs,
            config.warmups,
        )
        await repeat(
            f"ingest_single @{rate['value']:.0f}/s",
            {side: at_rate(side, process) for side, process in sides.items()},
            config.runs,
            0,
        )
    finally:
        await env.stop(ingest, bare, bare_kafka)
        await env.drop_namespace(settings)
    # the open-loop measurements were recorded with their latencies; drop nothing
    extra = {
        "connections_closed_loop": CONNECTIONS,
        "capacity_seconds": capacity_seconds,
        "offered_rate": rate["value"],
        "open_loop_seconds": rate_seconds,
        "failed_requests": failures,
        "cpu_cores_used_capacity": cpu,
    }
    at = f"@ {rate['value']:.0f}/s offered"
    rows: list[Row] = []
    for side, name in (("bare", "bare Starlette"), ("bare_kafka", "Starlette + aiokafka")):
        rows += [
            Row(
                "ingest_single",
                f"capacity ({CONNECTIONS} conns, closed loop)",
                "req/s",
                Summary(capacities["leadflow"]),
                baseline_name=name,
                baseline=Summary(capacities[side]),
                target=Target("ratio_min", 0.6 if side == "bare" else 0.8),
                extra=extra if not rows else {},
            ),
            Row(
                "ingest_single",
                f"achieved {at}",
                "req/s",
                Summary(achieved["leadflow"]),
                baseline_name=name,
                baseline=Summary(achieved[side]),
            ),
            Row(
                "ingest_single",
                f"p50 {at}",
                "ms",
                Summary([p50 for p50, _ in latency["leadflow"]]),
                higher_is_better=False,
                baseline_name=name,
                baseline=Summary([p50 for p50, _ in latency[side]]),
            ),
            Row(
                "ingest_single",
                f"p99 {at}",
                "ms",
                Summary([p99 for _, p99 in latency["leadflow"]]),
                higher_is_better=False,
                baseline_name=name,
                baseline=Summary([p99 for _, p99 in latency[side]]),
            ),
        ]
    return rows

"""ingest, batch: ``POST /v1/events/batch`` of 1000 events, events/s accepted (acks=all).

Baselines in the same run, on the same broker and topic layout:

- the aiokafka producer of :func:`shared.kafka.make_producer` (idempotent, acks=all)
  sending the same records, 1000 at a time with the same number of batches in flight;
- Kafka's own ``ProducerPerformance`` from the broker's jars (300-byte records, acks=all,
  idempotent, the same linger and batch size), the ceiling of the broker on this machine.
"""

from __future__ import annotations

import asyncio
import re
import time

from bench.common import (
    http_session,
    post_batch,
    produce_all,
    repeat,
    run_id,
    started_producer,
)
from bench.env import BenchEnv, Config, CpuMeter
from bench.payload import batch_bodies, bench_events, mean_record_bytes, record_values
from bench.stats import Row, Summary, Target

BATCH = 1000
IN_FLIGHT = 4
"""Batches (requests) outstanding at once: a few platforms posting concurrently."""

_RATE = re.compile(r"records sent, ([0-9.]+) records/sec")


async def run(env: BenchEnv, config: Config) -> list[Row]:
    count = config.size(quick=20_000, full=100_000)
    settings = await env.namespace("ingest-batch")
    events = bench_events(count, run_id=run_id())
    records = record_values(events)
    bodies = batch_bodies(events, BATCH)
    ingest = env.start_service("ingest", env.service_env(settings, LEADFLOW_LOG_LEVEL="WARNING"))
    await env.wait_ready(ingest)
    producer = await started_producer(settings, "bench-raw")
    cpu: dict[str, list[dict[str, float]]] = {"leadflow": [], "aiokafka": []}
    broker_pid = env.kafka.process.pid if env.kafka.process else None

    async def leadflow() -> float:
        meter = CpuMeter(
            {"ingest": ingest.process.pid if ingest.process else None, "broker": broker_pid}
        )
        queue = iter(bodies)
        async with http_session(IN_FLIGHT) as client:

            async def poster() -> None:
                for body in queue:
                    status = await post_batch(client, ingest.url, body)
                    if status != 202:
                        raise RuntimeError(f"ingest answered {status}")

            started = time.perf_counter()
            await asyncio.gather(*(poster() for _ in range(IN_FLIGHT)))
            rate = count / (time.perf_counter() - started)
        cpu["leadflow"].append(meter.utilisation())
        return rate

    async def aiokafka() -> float:
        meter = CpuMeter({"broker": broker_pid})
        rate = await produce_all(
            producer, settings.topics.events, records, batch=BATCH, in_flight=IN_FLIGHT
        )
        cpu["aiokafka"].append(meter.utilisation())
        return rate

    async def kafka_tool() -> float:
        tool_records = config.size(quick=100_000, full=500_000)
        command = env.java_tool(
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic", settings.topics.events,
            "--num-records", str(tool_records),
            "--record-size", "300",
            "--throughput", "-1",
            "--producer-props",
            f"bootstrap.servers={settings.kafka_bootstrap_servers}",
            "acks=all", "enable.idempotence=true", "linger.ms=5", "batch.size=262144",
        )  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await process.communicate()
        text = output.decode(errors="replace")
        rates = _RATE.findall(text)
        if process.returncode != 0 or not rates:
            raise RuntimeError(f"ProducerPerformance failed:\n{text[-2000:]}")
        return float(rates[-1])  # the last line is the whole run's summary

    try:
        results = await repeat(
            "ingest_batch",
            {"leadflow": leadflow, "aiokafka": aiokafka, "ProducerPerformance": kafka_tool},
            config.runs,
            config.warmups,
        )
    finally:
        await producer.stop()
        await env.stop(ingest)
        await env.drop_namespace(settings)
    extra = {
        "events_per_run": count,
        "batch_events": BATCH,
        "in_flight_requests": IN_FLIGHT,
        "mean_record_bytes": round(mean_record_bytes(records), 1),
        "cpu_cores_used": cpu,
    }
    leadflow_runs = Summary(results["leadflow"])
    return [
        Row(
            "ingest_batch",
            "events accepted (1000/request)",
            "events/s",
            leadflow_runs,
            baseline_name="aiokafka producer",
            baseline=Summary(results["aiokafka"]),
            target=Target("ratio_min", 0.5),
            extra=extra,
        ),
        Row(
            "ingest_batch",
            "events accepted (1000/request)",
            "events/s",
            leadflow_runs,
            baseline_name="ProducerPerformance",
            baseline=Summary(results["ProducerPerformance"]),
            notes="Java client, 300-byte records: the broker's ceiling here, for reference",
        ),
    ]

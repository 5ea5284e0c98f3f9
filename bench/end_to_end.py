"""end to end: from the 202 of ingest to the stage change visible in the REST API.

The three services run as processes on one broker namespace and a PostgreSQL database.

1. Burst throughput: post a burst of realistic events (batches of 500) and time it until
   pipeline has persisted every output (both consumer groups at the end of their input).
   Sustainable rate: a steady stream is less efficient than a burst (small batches, a
   transaction each), so the sustainable rate is found by a ladder of steady rates from a
   quarter of the burst throughput up, x1.25 per step: the highest one after which the
   system drains its backlog within ``DRAIN_LIMIT_S``. Each step offers exactly what the
   latency runs offer (background and probes), so "sustainable" includes the probes' load.
2. Latency at half the sustainable rate, and at twice that (the sustainable rate itself:
   where half of a doubled rate would be), open loop: the realistic background load is posted in
   batches ten times a second, and ``PROBES_PER_SECOND`` probe events (a new lead whose
   traits make it a prospect at once) go through ``POST /v1/events``. Each probe's
   latency runs from its 202 to the moment ``GET /v1/leads/{id}`` shows it as a prospect,
   polled every ``POLL_MS`` and, past 100 ms, every tenth of the time waited (a slow probe
   is at most 10% late, and the polling of slow probes cannot become a load of its own).

Baseline: Kafka produce -> consume latency on the same broker, aiokafka (the same
producer settings, a read_committed consumer), at the probe rate with the system idle.
Kafka's ``EndToEndLatency`` tool (one record at a time, acks=all) is kept in the JSON.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import http_session, post_batch, repeat, run_id, started_producer
from bench.env import BenchEnv, Config, CpuMeter, GroupOffsets
from bench.payload import batch_bodies, bench_events
from bench.stats import Row, Summary, Target, percentile, write
from shared.settings import LeadflowSettings

PROBES_PER_SECOND = 10
DRAIN_LIMIT_S = 1.5
POLL_MS = 10
BURST_BATCH = 500
QUALIFIED = {"industry": "saas", "employees": 200, "budget_usd": 20000, "job_level": "vp"}
_PERCENTILES = re.compile(r"50th = ([0-9.]+), 99th = ([0-9.]+), 99.9th = ([0-9.]+)")


async def caught_up(
    env: BenchEnv, settings: LeadflowSettings, groups: tuple[str, str], timeout: float
) -> None:
    """Until scoring committed all input and pipeline committed all of scoring's output."""
    topics = settings.topics
    scoring_group, pipeline_group = groups
    deadline = time.monotonic() + timeout
    async with GroupOffsets(env.bootstrap_servers) as offsets:
        while True:
            events_end = await offsets.ends(topics.events)
            scored = await offsets.committed(scoring_group, topics.events)
            if all(scored.get(tp, 0) >= end for tp, end in events_end.items()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("scoring did not catch up")
            await asyncio.sleep(0.1)
        while True:
            # every transaction ends with a marker: at rest, committed = end - 1
            ends = await offsets.ends(topics.scores, topics.stage_changes)
            persisted = await offsets.committed(pipeline_group)
            if all(persisted.get(tp, 0) >= end - 1 for tp, end in ends.items() if end > 0):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("pipeline did not catch up")
            await asyncio.sleep(0.1)


async def kafka_latency(env: BenchEnv, settings: LeadflowSettings, seconds: float) -> list[float]:
    """ms from ``send()`` to a read_committed consumer holding the record."""
    topic = env.unique("bench-latency")
    admin = AIOKafkaAdminClient(bootstrap_servers=env.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        await admin.close()
    await asyncio.sleep(1)  # leaders elected
    consumer = AIOKafkaConsumer(
        bootstrap_servers=env.bootstrap_servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await consumer.start()
    producer = await started_producer(settings, "bench-latency")
    sent: dict[int, float] = {}
    latencies: list[float] = []
    total = int(PROBES_PER_SECOND * seconds)
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(3)])
        await consumer.seek_to_end()
        for tp in consumer.assignment():
            await consumer.position(tp)

        async def receive() -> None:
            while len(latencies) < total:
                batches = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for records in batches.values():
                    for record in records:
                        latencies.append((now - sent[orjson.loads(record.value)["i"]]) * 1000)

        receiver = asyncio.create_task(receive())
        started = time.perf_counter()
        for index in range(total):
            delay = started + index / PROBES_PER_SECOND - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[index] = time.perf_counter()
            await producer.send(
                topic, orjson.dumps({"i": index, "pad": "x" * 280}), key=b"k%d" % index
            )
        await asyncio.wait_for(receiver, 60)
    finally:
        await producer.stop()
        await consumer.stop()
    return latencies


async def end_to_end_tool(env: BenchEnv, messages: int) -> dict[str, float]:
    topic = env.unique("bench-e2e-tool")
    command = env.java_tool(
        "org.apache.kafka.tools.EndToEndLatency",
        env.bootstrap_servers, topic, str(messages), "all", "300",
    )  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    found = _PERCENTILES.search(output.decode(errors="replace"))
    if found is None:
        return {}
    p50, p99, p999 = (float(v) for v in found.groups())
    return {"p50_ms": p50, "p99_ms": p99, "p99.9_ms": p999}


async def histograms(client: aiohttp.ClientSession, url: str) -> dict[str, dict[str, float]]:
    """Count and mean of every histogram a service exports (transaction and batch times):
    where the time between the 202 and the REST API goes."""
    async with client.get(f"{url}/metrics") as response:
        text = await response.text()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        if name.endswith("_sum"):
            sums[name[: -len("_sum")]] = float(value)
        elif name.endswith("_count"):
            counts[name[: -len("_count")]] = float(value)
    return {
        name: {"count": counts[name], "mean_ms": round(1000 * total / counts[name], 2)}
        for name, total in sums.items()
        if counts.get(name)
    }


async def run(env: BenchEnv, config: Config) -> list[Row]:
    settings = await env.namespace("e2e", 3)
    _, url = await env.new_database("e2e")
    groups = (env.unique("bench-e2e-scoring"), env.unique("bench-e2e-pipeline"))
    common = env.service_env(
        settings,
        LEADFLOW_LOG_LEVEL="WARNING",
        LEADFLOW_SCORING_GROUP=groups[0],
        LEADFLOW_PIPELINE_GROUP=groups[1],
        LEADFLOW_DATABASE_URL=url,
    )
    ingest = env.start_service("ingest", common)
    scoring = env.start_service("scoring", common)
    pipeline = env.start_service("pipeline", common)
    await env.wait_ready(ingest, scoring, pipeline)
    pids = {
        "ingest": ingest.process.pid if ingest.process else None,
        "scoring": scoring.process.pid if scoring.process else None,
        "pipeline": pipeline.process.pid if pipeline.process else None,
        "broker": env.kafka.process.pid if env.kafka.process else None,
    }
    burst = config.size(quick=8_000, full=30_000)
    seconds = config.seconds(quick=15, full=60)
    details: dict[str, Any] = {"burst_events": burst, "latency_seconds": seconds, "runs": []}
    client = http_session(512)

    async def sustainable() -> float:
        bodies = batch_bodies(bench_events(burst, run_id=run_id()), BURST_BATCH)
        queue = iter(bodies)
        meter = CpuMeter(pids)

        async def poster() -> None:
            for body in queue:
                status = await post_batch(client, ingest.url, body)
                if status != 202:
                    raise RuntimeError(f"ingest answered {status}")

        started = time.perf_counter()
        await asyncio.gather(poster(), poster())
        await caught_up(env, settings, groups, timeout=900)
        rate = burst / (time.perf_counter() - started)
        details.setdefault("sustainable_cpu", []).append(meter.utilisation())
        return rate

    async def latency_run(rate: float, duration: float) -> dict[str, Any]:
        """Background at ``rate`` minus the probes, probes at PROBES_PER_SECOND."""
        background_rate = max(0.0, rate - PROBES_PER_SECOND)
        per_tick = max(1, round(background_rate / 10))
        ticks = int(duration * 10)
        events = bench_events(max(1, per_tick * ticks), run_id=run_id())
        bodies = batch_bodies(events, per_tick)
        tag = run_id()
        latencies: list[float] = []
        failures = {"background": 0, "probes": 0}
        tasks: list[asyncio.Task[None]] = []

        async def post_background(body: bytes) -> None:
            if await post_batch(client, ingest.url, body) != 202:
                failures["background"] += 1

        async def probe(index: int) -> None:
            lead_id = f"probe-{tag}-{index}@bench.example.com"
            event = {
                "event_id": f"{lead_id}/0",
                "type": "lead.updated",
                "lead_id": lead_id,
                "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "source": "bench",
                "traits": QUALIFIED,
            }
            async with client.post(
                f"{ingest.url}/v1/events",
                data=orjson.dumps(event),
                headers={"content-type": "application/json"},
            ) as response:
                if response.status != 202:
                    failures["probes"] += 1
                    return
            accepted = time.perf_counter()
            path = f"{pipeline.url}/v1/leads/{quote(lead_id, safe='@')}"
            deadline = accepted + 30
            while time.perf_counter() < deadline:
                async with client.get(path) as response:
                    if response.status == 200:
                        body = await response.json()
                        if body["stage"] == "prospect":
                            latencies.append((time.perf_counter() - accepted) * 1000)
                            return
                    else:
                        await response.read()
                # every POLL_MS, then 10% of the time waited so far: a slow probe is measured
                # at most 10% late, and polling never grows into the load it measures
                waited = time.perf_counter() - accepted
                await asyncio.sleep(max(POLL_MS / 1000, waited / 10))
            failures["probes"] += 1

        meter = CpuMeter(pids)
        started = time.perf_counter()
        probes = int(duration * PROBES_PER_SECOND)
        schedule = sorted(
            [(i / 10, "background", i) for i in range(min(ticks, len(bodies)))]
            + [(i / PROBES_PER_SECOND, "probe", i) for i in range(probes)]
        )
        for at, kind, index in schedule:
            delay = started + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if kind == "background":
                tasks.append(asyncio.create_task(post_background(bodies[index])))
            else:
                tasks.append(asyncio.create_task(probe(index)))
        offered_until = time.perf_counter()
        await asyncio.gather(*tasks)
        return {
            "offered_until": offered_until,
            "offered_events_per_s": rate,
            "probes": probes,
            "samples": len(latencies),
            "failures": failures,
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "p99.9": percentile(latencies, 99.9),
            "max": max(latencies, default=float("nan")),
            "cpu": meter.utilisation(),
            "latencies": latencies,
        }

    async def keeps_up(rate: float, duration: float) -> tuple[bool, float]:
        """Offer ``rate`` for ``duration``: does the system drain in about a second after?

        Offered as the latency runs offer it, probes included: their polling of the REST
        API loads pipeline, so a ladder without them found a rate pipeline could not hold
        with them (2,984 events/s, then half of it fell behind in two runs of three)."""
        # from the last send, not from the last probe's answer: a probe waits until its
        # change is visible, and so would wait out most of a backlog
        ended = (await latency_run(rate, duration))["offered_until"]
        await caught_up(env, settings, groups, timeout=900)
        drain = time.perf_counter() - ended
        return drain <= DRAIN_LIMIT_S, drain

    async def ladder(burst_rate: float) -> float:
        """A burst fills every batch, which is the most efficient way through; a steady
        stream comes in small batches. Sustainable: the highest steady rate (a ladder from a
        quarter of the burst rate, x1.25 per step) after which the system drains the backlog
        within DRAIN_LIMIT_S."""
        await caught_up(env, settings, groups, timeout=900)
        steps: list[dict[str, float]] = []
        steady = 0.0
        rate = burst_rate / 4
        step_seconds = config.seconds(quick=6, full=15)
        failed = False
        while rate <= burst_rate and not (failed and steady):
            ok, drain = await keeps_up(rate, step_seconds)
            steps.append({"rate": round(rate, 1), "drain_s": round(drain, 2)})
            write(f"  end_to_end: steady {rate:,.0f} events/s: drained in {drain:.2f}s")
            if ok:
                steady = rate
                rate *= 1.25
            else:  # too fast: the highest rate that kept up stands; none yet: go down
                failed = True
                rate /= 1.25
            if failed and not steady and rate < burst_rate / 20:
                raise RuntimeError(f"the system kept up at no steady rate: {steps}")
        details["ladder"] = steps
        return steady

    async def latency_runs(rate: float) -> tuple[list[dict[str, Any]], list[dict[str, float]]]:
        """A short warm-up at ``rate``, then the latency runs, each followed by the Kafka
        baseline at the probe rate."""
        await latency_run(rate, min(10.0, seconds))
        runs: list[dict[str, Any]] = []
        raw: list[dict[str, float]] = []
        for index in range(config.runs):
            result = await latency_run(rate, seconds)
            runs.append(
                {k: v for k, v in result.items() if k not in ("latencies", "offered_until")}
            )
            pooled.setdefault(rate, []).extend(result["latencies"])
            write(
                f"  end_to_end: run {index + 1}/{config.runs} @ {rate:,.0f} events/s: "
                f"p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms, "
                f"p99.9 {result['p99.9']:.1f} ms ({result['samples']} probes)"
            )
            samples = await kafka_latency(env, settings, min(seconds, 20.0))
            raw.append(
                {
                    "p50": percentile(samples, 50),
                    "p99": percentile(samples, 99),
                    "p99.9": percentile(samples, 99.9),
                }
            )
            write(
                f"  end_to_end: run {index + 1}/{config.runs} aiokafka produce->consume: "
                f"p50 {raw[-1]['p50']:.1f} ms, p99 {raw[-1]['p99']:.1f} ms"
            )
        return runs, raw

    capacity: dict[str, list[float]] = {}
    latency: dict[float, tuple[list[dict[str, Any]], list[dict[str, float]]]] = {}
    pooled: dict[float, list[float]] = {}
    steady = 0.0
    try:
        if not config.e2e_rate:  # a fixed rate skips the burst and the ladder
            capacity = await repeat(
                "end_to_end burst", {"leadflow": sustainable}, config.runs, config.warmups
            )
            steady = await ladder(Summary(capacity["leadflow"]).median)
        half = config.e2e_rate or steady / 2
        for rate in (half, 2 * half):
            runs, raw = await latency_runs(rate)
            latency[rate] = (runs, raw)
            details["runs" if rate == half else "runs_at_double"] = runs
        details["service_metrics"] = {
            "scoring": await histograms(client, scoring.url),
            "pipeline": await histograms(client, pipeline.url),
        }
        details["end_to_end_latency_tool"] = await end_to_end_tool(
            env, config.size(quick=500, full=2000)
        )
        details["burst_events_per_s"] = capacity.get("leadflow", [])
    finally:
        await client.close()
        await env.stop(ingest, scoring, pipeline)
        await env.drop_namespace(settings)
    details["pooled_percentiles_ms"] = {
        f"{rate:.0f}": {
            "samples": len(samples),
            "p50": percentile(samples, 50),
            "p99": percentile(samples, 99),
            "p99.9": percentile(samples, 99.9),
        }
        for rate, samples in pooled.items()
    }
    rows: list[Row] = []
    if capacity:
        rows += [
            Row(
                "end_to_end",
                "burst throughput (30k events through all 3 services)"
                if not config.quick
                else "burst throughput (through all 3 services)",
                "events/s",
                Summary(capacity["leadflow"]),
            ),
            Row(
                "end_to_end",
                f"sustainable steady rate (drains in <= {DRAIN_LIMIT_S:g}s)",
                "events/s",
                Summary([steady]),
                notes="one ladder per run; the latency runs offer half of it, then all of it",
            ),
        ]
    for rate, (runs, raw) in latency.items():
        first = rate == min(latency)
        for key in ("p50", "p99", "p99.9"):
            target = Target("value_max", 100.0) if key == "p99" and first else None
            rows.append(
                Row(
                    "end_to_end",
                    f"202 -> visible in REST, {key} @ {rate:,.0f} events/s",
                    "ms",
                    Summary([run[key] for run in runs]),
                    higher_is_better=False,
                    baseline_name="aiokafka produce->consume",
                    baseline=Summary([r[key] for r in raw]),
                    target=target,
                )
            )
    rows[0].extra = details
    return rows

"""webhooks: stage changes delivered per second to 1 and to 50 endpoints, and the latency
from a stage change's commit on Kafka to the receiver's 2xx, beside httpx posting the same
signed payloads to the same receivers.

Stage changes are written straight to ``leadflow.stage-changes`` in committed
transactions, in the shape scoring writes them (key: the lead id, value:
``StageChange`` JSON), so the case measures the webhooks service alone: its consumer,
its database (PostgreSQL), its deliverer. The receivers (``bench/webhook_receiver.py``)
answer 204 at once and stamp each arrival with the wall clock; a sample is verified
with ``standardwebhooks`` after every run, and a run counts only if every change
reached every endpoint.

Latency starts when the bench's ``commit_transaction`` returns, stamped by the bench
with the same wall clock. Not the record's Kafka timestamp: that is the producer's
CreateTime, taken before the send and the commit's round trips, so it would charge the
service with the time the broker took to make the change visible. The raw side's
latency starts when a post is due in the same open loop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from bench.common import http_session, repeat, run_id, started_producer
from bench.deliveries import (
    Arrival,
    latencies_ms,
    missing,
    sample_every,
    tally,
    throughput,
    tick_sizes,
)
from bench.end_to_end import histograms
from bench.env import BenchEnv, Config, CpuMeter
from bench.stats import Row, Summary, Target, percentile, write
from devtools.processes import ServiceProcess
from services.webhooks.payloads import stage_changed
from services.webhooks.signing import signed_headers
from shared.events import Score, Stage, StageChange
from shared.kafka import encode_key

CONCURRENCY = 4
"""Deliveries in flight per endpoint: the service's default, and the raw side's posters."""
CHANGES_PER_TRANSACTION = 500
TICKS_PER_SECOND = 20
SAMPLES_PER_RUN = 200
STALL_SECONDS = 60.0


class Receivers:
    """The receiver process, seen from the bench: its paths, their secrets, what arrived."""

    def __init__(self, process: ServiceProcess, client: httpx.AsyncClient) -> None:
        self.process = process
        self.client = client
        self.secrets: dict[str, str] = {}

    def url(self, path: str) -> str:
        return f"{self.process.url}/hook/{path}"

    async def wait_for(self, total: int) -> None:
        """Until ``total`` requests arrived, or none for STALL_SECONDS."""
        seen, last_progress = -1, time.monotonic()
        while True:
            count = int((await self.client.get(f"{self.process.url}/count")).text)
            if count >= total:
                return
            if count != seen:
                seen, last_progress = count, time.monotonic()
            elif time.monotonic() - last_progress > STALL_SECONDS:
                return
            await asyncio.sleep(0.05)

    async def collect(self) -> tuple[list[Arrival], list[dict[str, Any]]]:
        response = await self.client.post(f"{self.process.url}/collect", timeout=60)
        document = orjson.loads(response.content)
        arrivals = [(str(p), str(w), float(t)) for p, w, t in document["arrivals"]]
        return arrivals, list(document["samples"])

    def verify(self, samples: Sequence[dict[str, Any]]) -> int:
        """Every sample must carry a valid signature of its endpoint's secret."""
        for sample in samples:
            try:
                Webhook(self.secrets[sample["path"]]).verify(sample["body"], sample["headers"])
            except (WebhookVerificationError, KeyError) as exc:
                raise RuntimeError(
                    f"a delivery to {sample['path']} failed to verify: {exc}"
                ) from exc
        return len(samples)


def stage_changes(count: int) -> list[tuple[bytes, bytes, str, bytes]]:
    """``count`` realistic changes of fresh leads: Kafka key, value, webhook id, payload."""
    tag = run_id()
    now = datetime.now(UTC)
    out = []
    for index in range(count):
        lead_id = f"wh-{tag}-{index}@bench.example.com"
        change = StageChange(
            change_id=f"{tag}-{index}-change",
            lead_id=lead_id,
            sequence=1,
            from_stage=Stage.LEAD,
            to_stage=Stage.PROSPECT,
            reason="total 62.5 reached the prospect threshold 50",
            trigger_event_id=f"{lead_id}/3",
            occurred_at=now - timedelta(seconds=index % 600),
            score=Score(fit=30.0, engagement=32.5, total=62.5),
            model_version="v3",
        )
        webhook_id, body = stage_changed(change)
        out.append((encode_key(lead_id), change.model_dump_json().encode(), webhook_id, body))
    return out


async def commit(producer: AIOKafkaProducer, topic: str, chunk: Sequence[Any]) -> float:
    """One transaction of stage changes; the wall clock once the commit returned."""
    async with producer.transaction():
        for key, value, *_ in chunk:
            await producer.send(topic, value, key=key)
    return time.time()


class Case:
    def __init__(
        self, env: BenchEnv, config: Config, receivers: Receivers, topic: str, pids: Any
    ) -> None:
        self.env, self.config, self.receivers, self.topic = env, config, receivers, topic
        self.pids = pids
        self.producer: AIOKafkaProducer | None = None
        self.raw_clients: dict[str, httpx.AsyncClient] = {}
        self.details: dict[str, Any] = {"runs": []}

    # --- the two sides ----------------------------------------------------------------

    async def leadflow_burst(self, paths: Sequence[str], count: int) -> float:
        assert self.producer is not None
        changes = stage_changes(count)
        meter = CpuMeter(self.pids)
        started = time.time()
        chunks = [
            changes[i : i + CHANGES_PER_TRANSACTION]
            for i in range(0, count, CHANGES_PER_TRANSACTION)
        ]
        for chunk in chunks:
            await commit(self.producer, self.topic, chunk)
        expected = {webhook_id: started for _, _, webhook_id, _ in changes}
        counted = await self._outcome("leadflow burst", paths, expected, meter)
        return throughput(count, started, counted)

    async def raw_burst(self, paths: Sequence[str], count: int) -> float:
        changes = stage_changes(count)
        signed = self._signed(paths, changes)
        meter = CpuMeter(self.pids)
        started = time.time()

        async def poster(queue: Any) -> None:
            for url, content, headers in queue:
                await self._post(url, content, headers)

        posters = []
        for path in paths:
            queue = iter(signed[path])
            posters += [poster(queue) for _ in range(CONCURRENCY)]
        await asyncio.gather(*posters)
        expected = {webhook_id: started for _, _, webhook_id, _ in changes}
        counted = await self._outcome("raw burst", paths, expected, meter)
        return throughput(count, started, counted)

    async def leadflow_steady(self, paths: Sequence[str], rate: float, seconds: float) -> Any:
        assert self.producer is not None
        sizes = tick_sizes(rate, seconds, TICKS_PER_SECOND)
        changes = stage_changes(sum(sizes))
        pending = iter(changes)
        expected: dict[str, float] = {}
        meter = CpuMeter(self.pids)
        started, late = time.monotonic(), 0.0
        for index, size in enumerate(sizes):
            delay = started + index / TICKS_PER_SECOND - time.monotonic()
            late = max(late, -delay)
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = list(itertools.islice(pending, size))
            if chunk:
                committed = await commit(self.producer, self.topic, chunk)
                expected.update((webhook_id, committed) for _, _, webhook_id, _ in chunk)
        counted = await self._outcome("leadflow steady", paths, expected, meter, late=late)
        return latencies_ms(counted, expected)

    async def raw_steady(self, paths: Sequence[str], rate: float, seconds: float) -> Any:
        sizes = tick_sizes(rate, seconds, TICKS_PER_SECOND)
        changes = stage_changes(sum(sizes))
        signed = self._signed(paths, changes)
        queues: dict[str, asyncio.Queue[Any]] = {path: asyncio.Queue() for path in paths}
        expected: dict[str, float] = {}

        async def poster(queue: asyncio.Queue[Any]) -> None:
            while (item := await queue.get()) is not None:
                await self._post(*item)

        posters = [
            asyncio.create_task(poster(queues[path])) for path in paths for _ in range(CONCURRENCY)
        ]
        meter = CpuMeter(self.pids)
        started, offset, late = time.monotonic(), 0, 0.0
        for index, size in enumerate(sizes):
            delay = started + index / TICKS_PER_SECOND - time.monotonic()
            late = max(late, -delay)
            if delay > 0:
                await asyncio.sleep(delay)
            due = time.time()
            for position in range(offset, offset + size):
                expected[changes[position][2]] = due
                for path in paths:
                    queues[path].put_nowait(signed[path][position])
            offset += size
        for path in paths:
            for _ in range(CONCURRENCY):
                queues[path].put_nowait(None)
        await asyncio.gather(*posters)
        counted = await self._outcome("raw steady", paths, expected, meter, late=late)
        return latencies_ms(counted, expected)

    # --- what both sides share --------------------------------------------------------

    def _signed(
        self, paths: Sequence[str], changes: Sequence[Any]
    ) -> dict[str, list[tuple[str, bytes, dict[str, str]]]]:
        """Signed before the clock starts, as leadflow's stored messages are ready."""
        now = datetime.now(UTC)
        return {
            path: [
                (
                    self.receivers.url(path),
                    body,
                    signed_headers([self.receivers.secrets[path]], webhook_id, now, body),
                )
                for _, _, webhook_id, body in changes
            ]
            for path in paths
        }

    def raw_client(self, url: str) -> httpx.AsyncClient:
        """One pool per endpoint, as the service keeps them: httpx's pool scans every
        connection it holds for each request, so one pool for fifty busy endpoints
        measures that scan, not posting."""
        client = self.raw_clients.get(url)
        if client is None:
            client = httpx.AsyncClient(
                http1=True,
                http2=False,
                timeout=httpx.Timeout(15.0),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
                trust_env=False,
            )
            self.raw_clients[url] = client
        return client

    async def _post(self, url: str, content: bytes, headers: dict[str, str]) -> None:
        response = await self.raw_client(url).post(url, content=content, headers=headers)
        if not response.is_success:
            raise RuntimeError(f"the receiver answered {response.status_code}")

    async def _outcome(
        self,
        side: str,
        paths: Sequence[str],
        expected: dict[str, float],
        meter: CpuMeter,
        late: float = 0.0,
    ) -> Any:
        await self.receivers.wait_for(len(expected) * len(paths))
        cpu = meter.utilisation()
        arrivals, samples = await self.receivers.collect()
        counted = tally(arrivals, expected, paths)
        lost = missing(counted, list(expected), paths)
        verified = self.receivers.verify(samples)
        self.details["runs"].append(
            {
                "side": side,
                "endpoints": len(paths),
                "changes": len(expected),
                "delivered": counted.delivered,
                "duplicates": counted.duplicates,
                "unexpected": counted.unexpected,
                "verified_samples": verified,
                "schedule_late_s": round(late, 3),
                "cpu": cpu,
            }
        )
        if lost:
            raise RuntimeError(f"{side}: {lost} deliveries missing after {STALL_SECONDS}s idle")
        return counted


async def create_endpoints(
    client: httpx.AsyncClient, service: ServiceProcess, receivers: Receivers, paths: Sequence[str]
) -> None:
    for path in paths:
        response = await client.post(
            f"{service.url}/v1/endpoints",
            json={
                "url": receivers.url(path),
                "description": f"bench receiver {path}",
                "event_types": ["lead.stage_changed"],
                "concurrency": CONCURRENCY,
            },
        )
        if response.status_code != 201:
            raise RuntimeError(f"creating an endpoint: {response.status_code} {response.text}")
        receivers.secrets[path] = response.json()["secret"]


def latency_rows(
    endpoints: int, rate: float, ours: list[list[float]], raw: list[list[float]]
) -> list[Row]:
    rows = []
    for q, target in ((50, None), (99, Target("value_max", 250.0))):
        rows.append(
            Row(
                "webhooks",
                f"commit -> receiver 2xx, p{q}, {endpoints} endpoint{'s' * (endpoints > 1)}"
                f" @ {rate:,.0f} changes/s",
                "ms",
                Summary([percentile(run, q) for run in ours]),
                higher_is_better=False,
                baseline_name="httpx, same payloads",
                baseline=Summary([percentile(run, q) for run in raw]),
                target=target,
            )
        )
    return rows


async def run(env: BenchEnv, config: Config) -> list[Row]:
    settings = await env.namespace("webhooks", 3)
    _, url = await env.new_database("webhooks")
    group = env.unique("bench-webhooks")
    service = env.start_service(
        "webhooks",
        env.service_env(
            settings,
            LEADFLOW_LOG_LEVEL="WARNING",
            LEADFLOW_WEBHOOKS_DATABASE_URL=url,
            LEADFLOW_WEBHOOKS_GROUP=group,
            LEADFLOW_WEBHOOKS_ALLOW_HTTP="true",
            LEADFLOW_WEBHOOKS_ALLOWED_NETWORKS="127.0.0.0/8",
            LEADFLOW_WEBHOOKS_SECRET_KEY=secrets.token_urlsafe(32),
        ),
    )
    one, fifty = config.size(quick=500, full=2_000), config.size(quick=40, full=120)
    sample = sample_every(one, SAMPLES_PER_RUN)
    receiver = env.start_module("bench.webhook_receiver", {"BENCH_SAMPLE_EVERY": str(sample)})
    await env.wait_ready(service, receiver)
    pids = {
        "webhooks": service.process.pid if service.process else None,
        "receiver": receiver.process.pid if receiver.process else None,
        "broker": env.kafka.process.pid if env.kafka.process else None,
        "bench": os.getpid(),
    }
    client = httpx.AsyncClient(timeout=30, trust_env=False)
    receivers = Receivers(receiver, client)
    case = Case(env, config, receivers, settings.topics.stage_changes, pids)
    seconds = config.seconds(quick=4, full=10)
    rows: list[Row] = []
    try:
        case.producer = await started_producer(
            settings, "bench-webhooks", transactional_id=env.unique("bench-webhooks-changes")
        )
        for endpoints, count in ((1, one), (50, fifty)):
            paths = [f"ep{i}" for i in range(endpoints)]
            await create_endpoints(client, service, receivers, paths[len(receivers.secrets) :])

            async def ours(paths: Sequence[str] = paths, count: int = count) -> float:
                return await case.leadflow_burst(paths, count)

            async def theirs(paths: Sequence[str] = paths, count: int = count) -> float:
                return await case.raw_burst(paths, count)

            label = f"{endpoints} endpoint{'s' * (endpoints > 1)}"
            rates = await repeat(
                f"webhooks {label}",
                {"leadflow": ours, "httpx": theirs},
                config.runs,
                config.warmups,
            )
            rows.append(
                Row(
                    "webhooks",
                    f"stage changes delivered to {label} ({count:,} in bursts of"
                    f" {CHANGES_PER_TRANSACTION}/txn)",
                    "changes/s",
                    Summary(rates["leadflow"]),
                    baseline_name="httpx, same payloads",
                    baseline=Summary(rates["httpx"]),
                    target=Target("ratio_min", 0.5),
                    notes=f"{endpoints * count:,} deliveries per run",
                )
            )
            rate = Summary(rates["leadflow"]).median / 2
            ours_latency: list[list[float]] = []
            raw_latency: list[list[float]] = []
            await case.leadflow_steady(paths, rate, min(seconds, 5.0))  # warm-up at the rate
            for index in range(config.runs):
                ours_latency.append(await case.leadflow_steady(paths, rate, seconds))
                raw_latency.append(await case.raw_steady(paths, rate, seconds))
                write(
                    f"  webhooks {label}: run {index + 1}/{config.runs} @ {rate:,.0f}/s: p99"
                    f" {percentile(ours_latency[-1], 99):.1f} ms, httpx"
                    f" {percentile(raw_latency[-1], 99):.1f} ms"
                )
            rows += latency_rows(endpoints, rate, ours_latency, raw_latency)
        async with http_session(4) as metrics_client:
            case.details["service_metrics"] = await histograms(metrics_client, service.url)
    finally:
        if case.producer is not None:
            await case.producer.stop()
        await asyncio.gather(*(c.aclose() for c in case.raw_clients.values()))
        await client.aclose()
        await env.stop(service, receiver)
        await env.drop_namespace(settings)
    if rows:
        rows[0].extra = case.details
    return rows

"""The three services as real processes on one broker, and the clients that drive them.

A fault test builds a :class:`Deployment`, posts events the way a platform
does (retrying 5xx with the same ids), breaks something, and then waits
until the pipeline's REST API serves what the reference model says.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient

from devtools.broker import LocalKafka, free_port
from devtools.processes import ServiceProcess
from shared.events import StageChange
from shared.settings import LeadflowSettings
from shared.topic_admin import create_topics
from tests.reference import Expected, change_sequence_problems, score_mismatches
from tests.topics import read_records


@dataclass
class Deployment:
    kafka: LocalKafka
    database_url: str
    workdir: Path
    partitions: int = 3
    namespace: str = field(default_factory=lambda: f"f{uuid.uuid4().hex[:10]}")
    processes: list[ServiceProcess] = field(default_factory=list)

    @property
    def settings(self) -> LeadflowSettings:
        return LeadflowSettings(
            kafka_bootstrap_servers=self.kafka.bootstrap_servers, topic_namespace=self.namespace
        )

    @property
    def env(self) -> dict[str, str]:
        return {
            "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "LEADFLOW_TOPIC_NAMESPACE": self.namespace,
            "LEADFLOW_DATABASE_URL": self.database_url,
            "LEADFLOW_SCORING_GROUP": f"{self.namespace}-scoring",
            "LEADFLOW_PIPELINE_GROUP": f"{self.namespace}-pipeline",
            "LEADFLOW_PUBLISH_TIMEOUT_SECONDS": "5",
            "LEADFLOW_RETRY_AFTER_SECONDS": "1",
        }

    async def create_topics(self) -> None:
        await create_topics(self.settings, self.partitions)

    def start(self, name: str, wait: bool = True) -> ServiceProcess:
        number = sum(p.name == name for p in self.processes)
        log = self.workdir / f"{name}-{number}.log"
        process = ServiceProcess(name, self.env, port=free_port(), log_file=log).start()
        self.processes.append(process)
        if wait:
            process.wait_ready()
        return process

    def restart(self, process: ServiceProcess, wait: bool = False) -> None:
        """The same service on the same port, as an orchestrator would restart it."""
        process.start()
        if wait:
            process.wait_ready()

    async def scored(self) -> int:
        """Input records scoring has committed (its group's offsets): exact progress."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka.bootstrap_servers)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(f"{self.namespace}-scoring")
        finally:
            await admin.close()
        return sum(max(0, meta.offset) for meta in offsets.values())

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()


class Platform:
    """A marketing platform: posts batches, retries 5xx with the same event ids."""

    def __init__(self, ingest_url: str, retry_for: float = 120.0) -> None:
        self.client = httpx.AsyncClient(base_url=ingest_url, timeout=30)
        self.retry_for = retry_for
        self.accepted: list[dict[str, Any]] = []
        self.statuses: list[int] = []

    async def post(self, batch: Sequence[dict[str, Any]]) -> None:
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                response = await self.client.post("/v1/events/batch", json=list(batch))
                self.statuses.append(response.status_code)
            except httpx.TransportError:
                self.statuses.append(0)  # ingest itself restarting: retry as for a 5xx
                response = None
            if response is not None and response.status_code == 202:
                self.accepted.extend(batch)
                return
            if response is not None and response.status_code < 500:
                raise AssertionError(f"ingest refused a valid batch: {response.text}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"ingest kept failing for {self.retry_for}s")
            await asyncio.sleep(0.2)

    async def post_all(
        self, events: Sequence[dict[str, Any]], batch_size: int = 500, pause: float = 0.0
    ) -> None:
        """In order, batch after batch; ``pause`` spreads the stream out in time."""
        for start in range(0, len(events), batch_size):
            await self.post(events[start : start + batch_size])
            if pause:
                await asyncio.sleep(pause)

    async def close(self) -> None:
        await self.client.aclose()


async def served_leads(pipeline_url: str) -> dict[str, dict[str, Any]]:
    """Every lead the pipeline serves, through its paginated listing."""
    leads: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=pipeline_url, timeout=30) as client:
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            response = await client.get("/v1/leads", params=params)
            response.raise_for_status()
            page = response.json()
            leads.update((lead["lead_id"], lead) for lead in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return leads


async def wait_until_served(
    pipeline_url: str, expected: Mapping[str, Expected], timeout: float = 240.0
) -> None:
    """Until the REST API serves exactly the reference scores; else fail with the differences."""
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    while time.monotonic() < deadline:
        try:
            problems = score_mismatches(expected, await served_leads(pipeline_url))
        except httpx.HTTPError as exc:
            problems = [f"pipeline unreachable: {exc!r}"]
        if not problems:
            return
        await asyncio.sleep(0.5)
    shown = "\n".join(problems[:10])
    raise AssertionError(f"{len(problems)} differences after {timeout}s, e.g.:\n{shown}")


async def served_feed(pipeline_url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=pipeline_url, timeout=30) as client:
        after = 0
        while True:
            page = await client.get("/v1/stage-changes", params={"after": after, "limit": 1000})
            page.raise_for_status()
            body = page.json()
            items.extend(body["items"])
            if not body["items"]:
                return items
            after = body["next_after"]


async def assert_stage_changes_exactly_once(
    deployment: Deployment, pipeline_url: str, expected: Mapping[str, Expected]
) -> None:
    """On the topic (read_committed) and in the feed: each change once, sequences gapless."""
    want = sum(len(e.changes) for e in expected.values())
    records = await read_records(
        deployment.settings,
        deployment.settings.topics.stage_changes,
        lambda r: len(r) >= want,
        timeout=120,
    )
    changes = [StageChange.model_validate_json(r.value) for r in records]
    assert len(changes) == want, f"{len(changes)} stage changes on the topic, {want} expected"
    assert change_sequence_problems(changes) == []
    wanted_ids = sorted(c.change_id for e in expected.values() for c in e.changes)
    assert sorted(c.change_id for c in changes) == wanted_ids

    feed = await served_feed(pipeline_url)
    assert sorted(item["change_id"] for item in feed) == wanted_ids


def unique(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """First occurrence of each event id, in order: what counts."""
    seen: set[str] = set()
    kept = []
    for event in events:
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            kept.append(event)
    return kept

"""Erasing a lead through the whole system: ingest, scoring, pipeline, the real broker.

After ``DELETE /v1/leads/{id}`` is complete, no REST endpoint serves the lead, no
database table holds its id, and once compaction has run no record of the compacted
topics (scores, scoring state) carries it; a new event for the same id starts a new lead.
The test's compacted topics are made to compact at once (tiny segments, no lag, no
tombstone retention); the broker's cleaner looks for work every second.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition

from devtools.broker import LocalKafka
from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.pipeline.app import create_app as create_pipeline
from services.pipeline.settings import PipelineSettings
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.database import create_engine
from shared.kafka import PARTITIONER, encode_key, make_consumer
from shared.settings import LeadflowSettings
from shared.topic_admin import create_topics
from shared.topics import Topics, TopicSpec
from tests.pipeline.conftest import ScratchDatabases
from tests.pipeline.records import tables_holding
from tests.servers import serving
from tests.waiting import eventually

pytestmark = pytest.mark.integration

PARTITIONS = 3
QUALIFIED = {"industry": "saas", "employees": 200, "budget_usd": 20000, "job_level": "vp"}
DAY = "2026-11-20T10:00:00Z"
COMPACT_AT_ONCE = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "0",
}


@dataclass(frozen=True)
class CompactingTopics(Topics):
    """leadflow's topics, the compacted ones set to compact as soon as the cleaner looks."""

    def specs(self) -> list[TopicSpec]:
        return [
            replace(spec, config=COMPACT_AT_ONCE) if spec.config else spec
            for spec in super().specs()
        ]


@dataclass
class System:
    settings: LeadflowSettings
    database_url: str
    ingest: httpx.AsyncClient
    pipeline: httpx.AsyncClient


@pytest.fixture
async def system(kafka: LocalKafka, scratch_databases: ScratchDatabases) -> AsyncIterator[System]:
    settings = LeadflowSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers, topic_namespace=f"t{uuid.uuid4().hex[:10]}"
    )
    compacting = CompactingTopics(settings.topic_namespace)
    await create_topics(settings, partitions=PARTITIONS, topics=compacting)
    common = settings.model_dump()
    database_url = await scratch_databases.create()
    with ExitStack() as servers:
        ingest_url = servers.enter_context(serving(create_ingest(IngestSettings(**common))))
        servers.enter_context(serving(create_scoring(ScoringSettings(**common))))
        pipeline_settings = PipelineSettings(**common, database_url=database_url)
        pipeline_url = servers.enter_context(serving(create_pipeline(pipeline_settings)))
        async with (
            httpx.AsyncClient(base_url=ingest_url, timeout=30) as ingest,
            httpx.AsyncClient(base_url=pipeline_url, timeout=30) as pipeline,
        ):
            yield System(settings, database_url, ingest, pipeline)


def event(n: int | str, kind: str, lead: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"{lead}/{n}", "type": kind, "lead_id": lead, "occurred_at": DAY, **fields}


def partition_of(lead: str) -> int:
    return PARTITIONER(encode_key(lead), list(range(PARTITIONS)), None)


async def keys_on(settings: LeadflowSettings, topic: str, partition: int) -> list[bytes | None]:
    """Every key of one partition, read_committed, from the beginning to its end now."""
    tp = TopicPartition(topic, partition)
    consumer = make_consumer(settings, name="test-compaction", group_id=None)
    await consumer.start()
    keys: list[bytes | None] = []
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=500)
            keys.extend(record.key for record in batches.get(tp, []))
    finally:
        await consumer.stop()
    return keys


async def lead_when(system: System, lead: str, ok: Any) -> dict[str, Any]:
    response = await eventually(
        lambda: system.pipeline.get(f"/v1/leads/{lead}"),
        lambda r: r.status_code == 200 and ok(r.json()),
        timeout=60,
        interval=0.2,
    )
    body: dict[str, Any] = response.json()
    return body


async def erase(system: System, lead: str) -> dict[str, Any]:
    """DELETE the lead, by another spelling of its address than the one it was posted
    with (the erase record must reach the lead's own partition); the erasure's status
    once it is complete."""
    spelled = lead.upper() if "@" in lead else lead
    accepted = await system.pipeline.delete(f"/v1/leads/{spelled}")
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["status"] == "pending"
    assert accepted.headers["Location"] == f"/v1/erasures/{body['erase_id']}"
    done = await eventually(
        lambda: system.pipeline.get(accepted.headers["Location"]),
        lambda r: r.json()["status"] == "complete",
        timeout=60,
        interval=0.2,
    )
    status: dict[str, Any] = done.json()
    assert status["erase_id"] == body["erase_id"]
    assert status["requested_at"] <= status["completed_at"]
    return status


async def test_an_erased_lead_is_gone_from_the_api_the_database_and_the_compacted_topics(
    system: System,
) -> None:
    ada = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    bob = f"bob-{uuid.uuid4().hex[:8]}@example.com"
    batch = [
        event(0, "lead.updated", ada, traits=QUALIFIED),
        event(1, "demo.requested", ada),
        event(0, "lead.updated", bob, traits=QUALIFIED),
    ]
    assert (await system.ingest.post("/v1/events/batch", json=batch)).status_code == 202
    await lead_when(system, ada, lambda lead: lead["stage"] == "opportunity")
    await lead_when(system, bob, lambda lead: lead["stage"] == "prospect")
    topics, key = system.settings.topics, encode_key(ada)
    for topic in (topics.scores, topics.scoring_state):  # what compaction is to remove
        assert key in await keys_on(system.settings, topic, partition_of(ada))

    # clients cannot erase through ingest: the type is leadflow's own
    forged = await system.ingest.post("/v1/events", json=event(9, "lead.erased", bob))
    assert forged.status_code == 422
    assert forged.json()["detail"][0]["loc"] == ["body", "type"]

    await erase(system, ada)
    api = system.pipeline
    assert (await api.get(f"/v1/leads/{ada}")).status_code == 404
    assert (await api.get(f"/v1/leads/{ada}/history")).status_code == 404
    assert (await api.get(f"/v1/leads/{ada}/score")).status_code == 404
    listing = (await api.get("/v1/leads", params={"limit": 1000})).json()
    assert [lead["lead_id"] for lead in listing["items"]] == [bob]
    feed = (await api.get("/v1/stage-changes", params={"limit": 1000})).json()
    assert {change["lead_id"] for change in feed["items"]} == {bob}
    assert (await api.get("/v1/funnel")).json()["total_leads"] == 1

    engine = create_engine(system.database_url)
    try:
        assert await tables_holding(engine, ada) == {}
        assert await tables_holding(engine, bob) != {}  # the search does find what is there
    finally:
        await engine.dispose()

    # an unknown id is erased all the same (its events could be on their way)
    await erase(system, f"nobody-{uuid.uuid4().hex[:8]}@example.com")

    await compacted_away(system, ada)

    # the same id again is a new lead: its history starts over
    again = [event("new-0", "lead.updated", ada, traits={"industry": "retail"})]
    assert (await system.ingest.post("/v1/events/batch", json=again)).status_code == 202
    reborn = await lead_when(system, ada, lambda lead: lead["stage"] == "lead")
    assert reborn["fit"] == 0
    # the score update and the stage change are one transaction on two topics: the
    # pipeline may record them in consecutive batches
    recorded = await eventually(
        lambda: api.get(f"/v1/leads/{ada}/history"),
        lambda r: r.status_code == 200 and bool(r.json()["items"]),
        timeout=30,
    )
    history = recorded.json()["items"]
    assert [(c["sequence"], c["from_stage"], c["to_stage"]) for c in history] == [(1, None, "lead")]
    assert (await api.get(f"/v1/leads/{ada}/score")).json()["sequence"] == 1


async def compacted_away(system: System, lead: str) -> None:
    """Post events of other leads on ``lead``'s partition (each batch of scoring appends to
    its scores and scoring-state partitions, rolling their segments) until a full read of
    both finds no record keyed by ``lead``."""
    topics, partition, key = system.settings.topics, partition_of(lead), encode_key(lead)
    fillers = (f"filler-{n}@example.com" for n in itertools.count())
    same_partition = (f for f in fillers if partition_of(f) == partition)

    async def post_and_read() -> dict[str, int]:
        filler = next(same_partition)
        posted = await system.ingest.post("/v1/events", json=event(0, "lead.updated", filler))
        assert posted.status_code == 202
        held = {}
        for topic in (topics.scores, topics.scoring_state):
            held[topic] = (await keys_on(system.settings, topic, partition)).count(key)
        return held

    await eventually(post_and_read, lambda held: not any(held.values()), timeout=120, interval=0.3)


async def test_an_erased_lead_leaves_its_account_and_no_account_table_keeps_its_id(
    system: System,
) -> None:
    ada = f"ada-{uuid.uuid4().hex[:8]}@acme.com"
    bob = f"bob-{uuid.uuid4().hex[:8]}@acme.com"
    domain = {"company_domain": "acme.com"}
    batch = [
        event(0, "lead.updated", ada, traits={**QUALIFIED, **domain}),
        event(1, "demo.requested", ada),
        event(0, "lead.updated", bob, traits=domain),
    ]
    assert (await system.ingest.post("/v1/events/batch", json=batch)).status_code == 202

    def listed(account: dict[str, Any]) -> set[str]:
        return {member["lead_id"] for member in account["members"]}

    async def acme_when(ok: Any) -> dict[str, Any]:
        response = await eventually(
            lambda: system.pipeline.get("/v1/accounts/acme.com"),
            lambda r: r.status_code == 200 and ok(r.json()),
            timeout=60,
            interval=0.2,
        )
        body: dict[str, Any] = response.json()
        return body

    await acme_when(lambda a: listed(a) == {ada, bob} and a["total"] == 105)
    await erase(system, ada)
    # the erasure signal takes ada out of the contacts at once; the account's own numbers
    # follow with its next roll-up, which the account stage sends as she leaves
    acme = await acme_when(lambda a: listed(a) == {bob} and a["contacts"] == 1)
    assert acme["total"] == 0

    engine = create_engine(system.database_url)
    try:
        assert await tables_holding(engine, ada) == {}
        assert "account_contacts" in await tables_holding(engine, bob)
    finally:
        await engine.dispose()


async def test_erasing_a_merged_person_erases_the_visitors_id_too(system: System) -> None:
    """The alias is erased before the lead: the visitor's later events start a new
    visitor, not the erased lead again, and no table holds either id meanwhile."""
    ada = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    visitor = f"anon:{uuid.uuid4().hex[:8]}"
    pricing = {"path": "/pricing"}
    batch = [
        event(0, "page.viewed", visitor, properties=pricing),
        event(0, "lead.updated", ada, traits=QUALIFIED),
    ]
    assert (await system.ingest.post("/v1/events/batch", json=batch)).status_code == 202
    await lead_when(system, visitor, lambda lead: lead["engagement"] > 0)
    await lead_when(system, ada, lambda lead: lead["fit"] > 0)
    merge = event(1, "identity.merge", visitor, properties={"into": ada})
    assert (await system.ingest.post("/v1/events", json=merge)).status_code == 202
    await lead_when(system, visitor, lambda lead: lead["lead_id"] == ada)

    await erase(system, ada)

    api = system.pipeline
    assert (await api.get(f"/v1/leads/{ada}")).status_code == 404
    assert (await api.get(f"/v1/leads/{visitor}")).status_code == 404
    later = event(2, "page.viewed", visitor, properties=pricing)
    assert (await system.ingest.post("/v1/events", json=later)).status_code == 202
    anew = await lead_when(system, visitor, lambda lead: lead["lead_id"] == visitor)
    assert (anew["fit"], anew["requested_alias"]) == (0, None)
    assert (await api.get(f"/v1/leads/{ada}")).status_code == 404
    engine = create_engine(system.database_url)
    try:
        assert await tables_holding(engine, ada) == {}
    finally:
        await engine.dispose()

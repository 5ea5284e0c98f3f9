"""The real Segment and RudderStack Python SDKs, unmodified, against ingest on loopback.

Each SDK sends every call type, batched (its background consumer, up to 100 calls a
request) and gzipped, with a leadflow API key as its write key; ingest, scoring and
the pipeline run in-process on the real broker, and the leads the calls make show the
default model's scores in the pipeline's REST API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient
from segment.analytics.request import APIError

from devtools.broker import LocalKafka, free_port
from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.pipeline.app import create_app as create_pipeline
from services.pipeline.settings import PipelineSettings
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.api_keys import format_line, key_digest
from shared.settings import LeadflowSettings
from shared.topic_admin import create_topics
from tests.pipeline.conftest import ScratchDatabases
from tests.servers import serving
from tests.topics import read_records
from tests.waiting import eventually

pytestmark = pytest.mark.integration

WRITE_KEY = "lf_segment-source"
KEYS = format_line("segment-source", ["events:write"], key_digest(WRITE_KEY.encode()))
QUALIFIED = {"industry": "saas", "employees": 200, "budget_usd": 20000, "job_level": "vp"}
WHEN = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


@dataclass
class System:
    ingest_url: str
    pipeline: httpx.AsyncClient


@pytest.fixture
async def system(kafka_settings: LeadflowSettings, tmp_path: Path) -> AsyncIterator[System]:
    """ingest (keys on: the write key is checked), scoring and pipeline (SQLite: the
    database is not what is under test) on one broker namespace."""
    common = kafka_settings.model_dump()
    database_url = await ScratchDatabases("sqlite", tmp_path).create()
    with ExitStack() as servers:
        ingest_url = servers.enter_context(
            serving(create_ingest(IngestSettings(**{**common, "api_keys": KEYS})))
        )
        servers.enter_context(serving(create_scoring(ScoringSettings(**common))))
        pipeline_settings = PipelineSettings(**common, database_url=database_url)
        pipeline_url = servers.enter_context(serving(create_pipeline(pipeline_settings)))
        async with httpx.AsyncClient(base_url=pipeline_url, timeout=30) as pipeline:
            yield System(ingest_url, pipeline)


def send_every_call(client: Any, user: str, visitor: str) -> None:
    """Every call type; ``user`` written with capitals, as a form might. The visitor
    browses before it identifies: the identify merges its engagement into ``user``."""
    shouted = user.upper()
    pricing = {"path": "/pricing/enterprise"}
    client.page(None, None, "Pricing", pricing, anonymous_id=visitor, timestamp=WHEN)
    client.track(anonymous_id=visitor, event="Email Link Clicked", timestamp=WHEN)
    client.identify(shouted, QUALIFIED, anonymous_id=visitor, timestamp=WHEN)
    client.track(user, "Form Submitted", {"form": "contact"}, timestamp=WHEN)
    client.track(user, "Webinar Attended", timestamp=WHEN)
    client.page(user, "Docs", "Pricing", {"path": "/pricing"}, timestamp=WHEN)
    client.page(user, None, "Pricing", {"url": "https://example.com/pricing/teams"}, timestamp=WHEN)
    client.screen(user, None, "Checkout", timestamp=WHEN)
    client.group(user, "acme", {"employees": 500}, timestamp=WHEN)
    client.alias(visitor, user, timestamp=WHEN)
    client.track(user, "Product Viewed", {"sku": "x-1"}, timestamp=WHEN)  # unmapped: 0 points
    client.track(user, "Demo Requested", timestamp=WHEN)
    client.track(anonymous_id=f"{visitor}-2", event="Email Opened", timestamp=WHEN)


CALLS_OF_USER = 10
"""What :func:`send_every_call` sends about ``user``: each one event of the lead."""

VISITOR_CALLS = 2
"""What :func:`send_every_call` sends about the visitor before it identifies: a pricing
view and an e-mail click, which the identify's merge carries to the user."""

MERGE_REQUESTS = 2
"""The identity merges the identify (it names the visitor) and the alias ask for, each an
event of the visitor's own (docs/architecture.md §5.12)."""


async def assert_scored(system: System, user: str, visitor: str) -> None:
    async def fetch(lead: str) -> Callable[[], Any]:
        async def get() -> httpx.Response:
            return await system.pipeline.get(f"/v1/leads/{lead}")

        return get

    def applied(count: int) -> Callable[[httpx.Response], bool]:
        return lambda r: r.status_code == 200 and r.json()["sequence"] == count

    known = await eventually(await fetch(user), lambda r: r.status_code == 200, timeout=60)
    score = await eventually(
        lambda: system.pipeline.get(f"/v1/leads/{user}/score"),
        applied(CALLS_OF_USER + 1),  # and the merge of the visitor's calls, as one
        timeout=60,
        interval=0.2,
    )
    lead = (await system.pipeline.get(f"/v1/leads/{user}")).json()
    latest = {"as_of": lead["as_of"]}  # valued at its latest event: as scored, before decay
    lead = (await system.pipeline.get(f"/v1/leads/{user}", params=latest)).json()
    # fit 20 + 15 + 20 + 20; engagement form 10, webinar 15, two pricing views 5 each, demo
    # 30; and the visitor's, merged: its pricing view 5 (the third of the day) and click 3
    assert lead["fit"] == pytest.approx(75)
    assert lead["engagement"] == pytest.approx(73, abs=1e-3)  # the calls' times may differ by ms
    assert lead["stage"] == "opportunity"
    rules = {r["rule"] for r in score.json()["breakdown"]}
    assert not any("segment" in rule or "product" in rule for rule in rules)
    counts = {r["rule"].split(":")[0]: r["count"] for r in score.json()["breakdown"]}
    assert (counts["pricing-view"], counts["email-click"]) == (3, 1)  # the visitor's counted
    assert known.json()["lead_id"] == user  # the capitals of the identify folded away
    anonymous = await eventually(
        await fetch(f"anon:{visitor}-2"), lambda r: r.status_code == 200, timeout=60
    )
    at_latest = {"as_of": anonymous.json()["as_of"]}  # as scored, before any decay
    valued = await system.pipeline.get(f"/v1/leads/anon:{visitor}-2", params=at_latest)
    assert valued.json()["engagement"] == pytest.approx(1)
    other_spelling = await system.pipeline.get(f"/v1/leads/{user.upper()}")
    assert other_spelling.json()["lead_id"] == user  # one lead, whichever spelling asks
    listed = (await system.pipeline.get("/v1/leads", params={"limit": 1000})).json()["items"]
    assert [item["lead_id"] for item in listed].count(user) == 1
    assert not any(item["lead_id"] == user.upper() for item in listed)


def batch_requests() -> tuple[float, float]:
    """Requests ``/v1/batch`` published and the events they carried, so far."""
    labels = {"endpoint": "segment_batch"}
    requests = REGISTRY.get_sample_value("leadflow_ingest_publish_seconds_count", labels)
    events = REGISTRY.get_sample_value("leadflow_ingest_events_accepted_total", labels)
    return requests or 0.0, events or 0.0


def assert_batched(before: tuple[float, float]) -> None:
    requests, events = (now - then for now, then in zip(batch_requests(), before, strict=True))
    assert events == VISITOR_CALLS + CALLS_OF_USER + 1 + MERGE_REQUESTS
    assert 1 <= requests < events  # batched: fewer requests than calls


async def test_segment_s_sdk_batched_and_gzipped(system: System) -> None:
    before = batch_requests()
    errors: list[Exception] = []
    client = SegmentClient(
        WRITE_KEY,
        host=system.ingest_url,
        gzip=True,
        upload_size=100,
        on_error=lambda error, _: errors.append(error),
    )
    await asyncio.to_thread(send_every_call, client, "ada@example.com", "visitor-ada")
    await asyncio.to_thread(client.flush)  # returns once every call was uploaded or failed
    await asyncio.to_thread(client.join)
    assert errors == []
    assert_batched(before)
    await assert_scored(system, "ada@example.com", "visitor-ada")


async def test_rudderstack_s_sdk_batched_and_gzipped(system: System) -> None:
    before = batch_requests()
    errors: list[Exception] = []
    client = RudderClient(
        WRITE_KEY,
        host=system.ingest_url,
        gzip=True,
        upload_size=100,
        on_error=lambda error, _: errors.append(error),
    )
    await asyncio.to_thread(send_every_call, client, "bob@example.com", "visitor-bob")
    await asyncio.to_thread(client.flush)
    await asyncio.to_thread(client.join)
    assert errors == []
    assert_batched(before)
    await assert_scored(system, "bob@example.com", "visitor-bob")


async def test_sync_mode_sends_each_call_and_a_bad_key_is_not_retried(system: System) -> None:
    client = SegmentClient(WRITE_KEY, host=system.ingest_url, gzip=True, sync_mode=True)
    await asyncio.to_thread(send_every_call, client, "cyd@example.com", "visitor-cyd")
    await assert_scored(system, "cyd@example.com", "visitor-cyd")
    wrong = SegmentClient("lf_wrong", host=system.ingest_url, sync_mode=True)
    with pytest.raises(APIError) as refused:
        await asyncio.to_thread(wrong.track, "cyd@example.com", "Email Opened")
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")


async def test_the_sdk_retries_a_503_and_every_call_lands_once_the_broker_is_back(
    tmp_path: Path,
) -> None:
    """What the answers are for: Kafka down, ingest answers 503 with Retry-After, Segment's
    SDK keeps the batch and sends it again after the wait; once the broker is back every
    call is on the topic, each messageId once."""
    broker = LocalKafka(tmp_path / "kafka", port=free_port())
    broker.start()
    try:
        base = LeadflowSettings(kafka_bootstrap_servers=broker.bootstrap_servers)
        await create_topics(base)
        options = {"api_keys": KEYS, "publish_timeout_seconds": 2, "retry_after_seconds": 1}
        settings = IngestSettings(**{**base.model_dump(), **options})
        refused_before = await kafka_refusals()
        with serving(create_ingest(settings)) as url:
            broker.stop()
            client = SegmentClient(WRITE_KEY, host=url, gzip=True, upload_size=100)
            ids = [f"retry-{n}" for n in range(20)]
            for message_id in ids:
                client.track("dee@example.com", "Email Opened", message_id=message_id)
            await eventually(kafka_refusals, lambda refused: refused > refused_before, timeout=60)
            broker.start()
            await asyncio.to_thread(client.flush)
            await asyncio.to_thread(client.join)
        records = await read_records(
            base,
            base.topics.events,
            lambda r: set(ids) <= {orjson.loads(x.value)["event_id"] for x in r},
        )
        landed = [orjson.loads(r.value)["event_id"] for r in records]
        assert set(landed) == set(ids)  # a refused attempt may have landed too: same ids
    finally:
        broker.stop()


async def kafka_refusals() -> float:
    """503s ingest answered because Kafka did not confirm (its own metric)."""
    labels = {"reason": "kafka_unavailable"}
    return REGISTRY.get_sample_value("leadflow_ingest_requests_rejected_total", labels) or 0.0

"""A stream of events through ingest and scoring on the real broker, out as webhooks.

Every stage change the reference model says happened reaches the endpoint that
wants all of them exactly once by webhook-id, the filtered endpoint only those
into its stages, the score endpoint only the updates that cross its threshold (as the
scoring model computes them), and every lead is announced once: each verified with the
reference Standard Webhooks library.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.synthetic import synthetic_stream
from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.pipeline.app import create_app as create_pipeline
from services.pipeline.settings import PipelineSettings
from services.scoring.app import create_app as create_scoring
from services.scoring.lead import LeadState
from services.scoring.model import load_model
from services.scoring.scoring import apply_event
from services.scoring.settings import ScoringSettings
from services.webhooks.app import create_app as create_webhooks
from shared.events import Event
from shared.settings import LeadflowSettings
from tests.reference import reference
from tests.servers import serving
from tests.waiting import eventually
from tests.webhooks.conftest import webhooks_settings
from tests.webhooks.receivers import ManualClock, Receiver, receiving

pytestmark = pytest.mark.integration

CLOSING = {"opportunity", "customer"}
HOT = 50.0


def crossings(events: list[dict[str, Any]], threshold: float) -> list[tuple[str, int]]:
    """(lead, sequence) of each score update whose total crossed ``threshold`` from the
    previous one (from 0 for a lead's first), by the scoring model itself."""
    model = load_model()
    states: dict[str, LeadState | None] = defaultdict(lambda: None)
    totals: dict[str, float] = {}
    found = []
    for item in events:
        event = Event.model_validate(item)
        outcome = apply_event(states[event.lead_id], event, model)
        update = outcome.score_update
        if outcome.skipped is not None or update is None:
            continue
        states[event.lead_id] = outcome.state
        before = totals.get(event.lead_id, 0.0)
        if (before < threshold) != (update.total < threshold):
            found.append((update.lead_id, update.sequence))
        totals[event.lead_id] = update.total
    return sorted(found)


@pytest.mark.parametrize("webhooks_database", ["sqlite"], indirect=True)
async def test_every_stage_change_of_a_stream_arrives_once_with_filters_applied(
    kafka_settings: LeadflowSettings, webhooks_database: str
) -> None:
    events = list(synthetic_stream(leads=250, events_per_lead=8, seed=21, run_id="hooks"))
    assert len(events) >= 2000
    expected = reference(events)
    changes = [c for lead in expected.values() for c in lead.changes]
    hot_updates = crossings(events, HOT)
    common = kafka_settings.model_dump()
    settings = webhooks_settings(webhooks_database, **common, webhooks_consume=True)
    with ExitStack() as stack:
        every = stack.enter_context(receiving(Receiver()))
        closing = stack.enter_context(receiving(Receiver()))
        births = stack.enter_context(receiving(Receiver()))
        hot = stack.enter_context(receiving(Receiver()))
        ingest_url = stack.enter_context(serving(create_ingest(IngestSettings(**common))))
        stack.enter_context(serving(create_scoring(ScoringSettings(**common))))
        webhooks_url = stack.enter_context(serving(create_webhooks(settings, ManualClock())))
        async with httpx.AsyncClient(base_url=webhooks_url, timeout=30) as api:
            for receiver, fields in (
                (every, {}),
                (closing, {"filters": {"to_stages": sorted(CLOSING)}}),
                (births, {"event_types": ["lead.created"]}),
                (
                    hot,
                    {"event_types": ["lead.score_changed"], "filters": {"score_thresholds": [HOT]}},
                ),
            ):
                created = await api.post("/v1/endpoints", json={"url": receiver.url, **fields})
                receiver.secrets = [created.json()["secret"]]
            async with httpx.AsyncClient(base_url=ingest_url, timeout=30) as ingest:
                for start in range(0, len(events), 500):
                    posted = await ingest.post("/v1/events/batch", json=events[start : start + 500])
                    assert posted.status_code == 202

            async def progress() -> tuple[int, ...]:
                return tuple(len(r.deliveries) for r in (every, closing, births, hot))

            wanted_closing = [c for c in changes if c.to_stage in CLOSING]
            want = (len(changes), len(wanted_closing), len(expected), len(hot_updates))
            await eventually(
                progress,
                lambda got: all(n >= w for n, w in zip(got, want, strict=True)),
                timeout=240,
                interval=0.5,
            )

    for receiver in (every, closing, births, hot):
        assert all(d.verified_by == frozenset(receiver.secrets) for d in receiver.deliveries)
        assert Counter(receiver.ids()).most_common(1)[0][1] == 1  # no id twice
    delivered = sorted(d.payload["data"]["change_id"] for d in every.deliveries)
    assert delivered == sorted(c.change_id for c in changes)
    filtered = sorted(d.payload["data"]["change_id"] for d in closing.deliveries)
    assert filtered == sorted(c.change_id for c in wanted_closing)
    assert sorted(d.payload["data"]["lead_id"] for d in births.deliveries) == sorted(expected)
    assert {d.payload["type"] for d in births.deliveries} == {"lead.created"}
    sent_hot = sorted(
        (d.payload["data"]["lead_id"], d.payload["data"]["sequence"]) for d in hot.deliveries
    )
    assert sent_hot == hot_updates


@pytest.mark.parametrize("webhooks_database", ["sqlite"], indirect=True)
async def test_an_erased_lead_leaves_no_message_in_the_webhooks_database(
    kafka_settings: LeadflowSettings, webhooks_database: str, tmp_path: Path
) -> None:
    common = kafka_settings.model_dump()
    settings = webhooks_settings(webhooks_database, **common, webhooks_consume=True)
    pipeline_settings = PipelineSettings(
        **common, database_url=f"sqlite+aiosqlite:///{tmp_path / 'pipeline.db'}"
    )
    qualified = {"industry": "saas", "employees": 200, "budget_usd": 20000, "job_level": "vp"}
    events = [
        {
            "event_id": f"{lead}/0",
            "type": "lead.updated",
            "lead_id": lead,
            "occurred_at": "2026-11-20T10:00:00Z",
            "traits": qualified,
        }
        for lead in ("ada@example.com", "bob@example.com")
    ]
    with ExitStack() as stack:
        down = stack.enter_context(receiving(Receiver(status=503)))  # messages stay pending
        ingest_url = stack.enter_context(serving(create_ingest(IngestSettings(**common))))
        stack.enter_context(serving(create_scoring(ScoringSettings(**common))))
        pipeline_url = stack.enter_context(serving(create_pipeline(pipeline_settings)))
        webhooks_url = stack.enter_context(serving(create_webhooks(settings, ManualClock())))
        async with (
            httpx.AsyncClient(base_url=webhooks_url, timeout=30) as api,
            httpx.AsyncClient(timeout=30) as client,
        ):
            body = {"url": down.url, "event_types": ["lead.stage_changed", "lead.created"]}
            endpoint_id = (await api.post("/v1/endpoints", json=body)).json()["endpoint_id"]
            posted = await client.post(f"{ingest_url}/v1/events/batch", json=events)
            assert posted.status_code == 202

            async def leads() -> Counter[str]:
                page = await api.get(f"/v1/endpoints/{endpoint_id}/messages")
                return Counter(m["lead_id"] for m in page.json()["items"])

            both = {"ada@example.com": 2, "bob@example.com": 2}  # created, then prospect
            await eventually(leads, lambda found: found == both, timeout=60)
            erased = await client.delete(f"{pipeline_url}/v1/leads/ada@example.com")
            assert erased.status_code == 202
            await eventually(leads, lambda found: found == {"bob@example.com": 2}, timeout=60)

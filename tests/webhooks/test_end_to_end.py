"""A stream of events through ingest and scoring on the real broker, out as webhooks.

Every stage change the reference model says happened reaches the endpoint that
wants all of them exactly once by webhook-id, the filtered endpoint only those
into its stages, and every lead is announced once: each verified with the
reference Standard Webhooks library.
"""

from __future__ import annotations

from collections import Counter
from contextlib import ExitStack

import httpx
import pytest

from devtools.synthetic import synthetic_stream
from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from services.webhooks.app import create_app as create_webhooks
from shared.settings import LeadflowSettings
from tests.reference import reference
from tests.servers import serving
from tests.waiting import eventually
from tests.webhooks.conftest import webhooks_settings
from tests.webhooks.receivers import ManualClock, Receiver, receiving

pytestmark = pytest.mark.integration

CLOSING = {"opportunity", "customer"}


@pytest.mark.parametrize("webhooks_database", ["sqlite"], indirect=True)
async def test_every_stage_change_of_a_stream_arrives_once_with_filters_applied(
    kafka_settings: LeadflowSettings, webhooks_database: str
) -> None:
    events = list(synthetic_stream(leads=250, events_per_lead=8, seed=21, run_id="hooks"))
    assert len(events) >= 2000
    expected = reference(events)
    changes = [c for lead in expected.values() for c in lead.changes]
    common = kafka_settings.model_dump()
    settings = webhooks_settings(webhooks_database, **common, webhooks_consume=True)
    with ExitStack() as stack:
        every = stack.enter_context(receiving(Receiver()))
        closing = stack.enter_context(receiving(Receiver()))
        births = stack.enter_context(receiving(Receiver()))
        ingest_url = stack.enter_context(serving(create_ingest(IngestSettings(**common))))
        stack.enter_context(serving(create_scoring(ScoringSettings(**common))))
        webhooks_url = stack.enter_context(serving(create_webhooks(settings, ManualClock())))
        async with httpx.AsyncClient(base_url=webhooks_url, timeout=30) as api:
            for receiver, fields in (
                (every, {}),
                (closing, {"filters": {"to_stages": sorted(CLOSING)}}),
                (births, {"event_types": ["lead.created"]}),
            ):
                created = await api.post("/v1/endpoints", json={"url": receiver.url, **fields})
                receiver.secrets = [created.json()["secret"]]
            async with httpx.AsyncClient(base_url=ingest_url, timeout=30) as ingest:
                for start in range(0, len(events), 500):
                    posted = await ingest.post("/v1/events/batch", json=events[start : start + 500])
                    assert posted.status_code == 202

            async def progress() -> tuple[int, int, int]:
                return len(every.deliveries), len(closing.deliveries), len(births.deliveries)

            wanted_closing = [c for c in changes if c.to_stage in CLOSING]
            want = (len(changes), len(wanted_closing), len(expected))
            await eventually(
                progress,
                lambda got: all(n >= w for n, w in zip(got, want, strict=True)),
                timeout=240,
                interval=0.5,
            )

    for receiver in (every, closing, births):
        assert all(d.verified_by == frozenset(receiver.secrets) for d in receiver.deliveries)
        assert Counter(receiver.ids()).most_common(1)[0][1] == 1  # no id twice
    delivered = sorted(d.payload["data"]["change_id"] for d in every.deliveries)
    assert delivered == sorted(c.change_id for c in changes)
    filtered = sorted(d.payload["data"]["change_id"] for d in closing.deliveries)
    assert filtered == sorted(c.change_id for c in wanted_closing)
    assert sorted(d.payload["data"]["lead_id"] for d in births.deliveries) == sorted(expected)
    assert {d.payload["type"] for d in births.deliveries} == {"lead.created"}

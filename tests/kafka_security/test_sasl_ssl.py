"""The whole system over SASL_SSL (SCRAM-SHA-512, a CA of the test's own), and what a service
does when Kafka does not let it in: not ready, one line naming the cause, retries.

Every client of the three services (ingest's producer, scoring's consumer, per-partition
transactional producers and changelog readers, pipeline's consumer, the admin clients)
talks to a broker whose only client listener is SASL_SSL, so any client the factory did
not equip would fail these tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.pipeline.app import create_app as create_pipeline
from services.pipeline.settings import PipelineSettings
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.background import BackgroundLoop
from shared.kafka_outage import KafkaUnreachable, check_connection
from shared.settings import LeadflowSettings
from shared.topic_admin import wait_until_ready
from tests.kafka_security.conftest import Certificates
from tests.pipeline.test_end_to_end import QUALIFIED, System, event
from tests.servers import serving
from tests.waiting import eventually

pytestmark = pytest.mark.integration

LEADS = 150
PRICING = {"path": "/pricing"}


@pytest.fixture
async def secure_system(secure_settings: LeadflowSettings, tmp_path: Path) -> AsyncIterator[System]:
    common = secure_settings.model_dump()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'pipeline.db'}"
    with ExitStack() as servers:
        ingest_url = servers.enter_context(serving(create_ingest(IngestSettings(**common))))
        scoring_url = servers.enter_context(serving(create_scoring(ScoringSettings(**common))))
        pipeline = create_pipeline(PipelineSettings(**common, database_url=database_url))
        pipeline_url = servers.enter_context(serving(pipeline))
        for url in (ingest_url, scoring_url, pipeline_url):  # the clock measures the flow
            await _ready(url)
        async with (
            httpx.AsyncClient(base_url=ingest_url, timeout=30) as ingest,
            httpx.AsyncClient(base_url=pipeline_url, timeout=30) as reader,
        ):
            yield System(ingest, reader)


def journey(lead: str) -> list[dict[str, Any]]:
    """Seven events that take a qualified lead to opportunity: fit 75, engagement 40."""
    return [
        event(0, "lead.updated", lead, traits=QUALIFIED),
        event(1, "form.submitted", lead),
        event(2, "webinar.attended", lead),
        *(event(3 + i, "page.viewed", lead, properties=PRICING) for i in range(4)),
    ]


async def test_events_flow_from_ingest_to_the_rest_api_over_sasl_ssl(
    secure_system: System, record_property: Any
) -> None:
    leads = [f"lead-{n}@secure.example.com" for n in range(LEADS)]
    events = [e for lead in leads for e in journey(lead)]
    started = time.monotonic()
    for offset in range(0, len(events), 350):
        accepted = await secure_system.ingest.post(
            "/v1/events/batch", json=events[offset : offset + 350]
        )
        assert accepted.status_code == 202, accepted.text

    async def funnel() -> dict[str, Any]:
        body: dict[str, Any] = (await secure_system.pipeline.get("/v1/funnel")).json()
        return body

    def all_opportunities(body: dict[str, Any]) -> bool:
        current = {s["stage"]: s["current"] for s in body["stages"]}
        return bool(body["total_leads"] == LEADS and current["opportunity"] == LEADS)

    await eventually(funnel, all_opportunities, timeout=120, interval=0.1)
    seconds = time.monotonic() - started

    latest = (await secure_system.pipeline.get(f"/v1/leads/{leads[-1]}")).json()["as_of"]
    at_latest = {"as_of": latest}  # valued at its latest event: as scored, before decay
    lead = (await secure_system.pipeline.get(f"/v1/leads/{leads[-1]}", params=at_latest)).json()
    assert (lead["fit"], lead["engagement"], lead["total"], lead["stage"]) == (
        75,
        40,
        115,
        "opportunity",
    )
    figures = {"events": len(events), "leads": LEADS, "seconds": round(seconds, 2)}
    for name, value in figures.items():
        record_property(name, value)
    print(f"\nSASL_SSL end to end: {figures}")  # noqa: T201 - the figures asked for


def _wrong_password(settings: LeadflowSettings) -> dict[str, Any]:
    return {**settings.model_dump(), "kafka_sasl_password": "not-the-password"}


def _kafka_lines(caplog: pytest.LogCaptureFixture, service: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.getMessage().startswith(f"{service} cannot use Kafka")
    ]


async def _ready(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await eventually(lambda: client.get("/readyz"), lambda r: r.status_code == 200, timeout=60)


async def _not_ready(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await eventually(
            lambda: client.get("/readyz"), lambda r: r.status_code == 503, timeout=30
        )
        assert response.json()["status"] == "not ready"
        assert (await client.get("/healthz")).status_code == 200  # alive: no restart loop


async def test_a_wrong_password_keeps_ingest_not_ready_with_one_line_naming_it(
    secure_settings: LeadflowSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = IngestSettings(**_wrong_password(secure_settings))
    app = create_ingest(settings)
    with serving(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            refused = await client.post("/v1/events", json=event(0, "email.opened", "x@y.z"))
            assert refused.status_code == 503
            await _not_ready(url)
            # every probe and post in between is answered at once, without a new try;
            # the tries that follow the backoff find the same cause and say nothing new
            for _ in range(20):
                assert (await client.get("/readyz")).status_code == 503
    lines = _kafka_lines(caplog, "ingest")
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "Kafka rejected the SASL credentials for user 'leadflow' (SCRAM-SHA-512)" in (
        lines[0].getMessage()
    )
    assert "not-the-password" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info], "no stack traces"


async def test_a_wrong_password_keeps_scoring_alive_and_retrying(
    secure_settings: LeadflowSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = create_scoring(ScoringSettings(**_wrong_password(secure_settings)))
    with serving(app) as url:
        await _not_ready(url)
        await eventually(lambda: _tries(app, "scoring"), lambda tries: tries >= 3, timeout=30)
        await _not_ready(url)
    lines = _kafka_lines(caplog, "scoring-worker")
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "Kafka rejected the SASL credentials for user 'leadflow' (SCRAM-SHA-512)" in (
        lines[0].getMessage()
    )
    assert not [r for r in caplog.records if r.exc_info], "no stack traces"


async def test_an_untrusted_certificate_keeps_pipeline_not_ready_naming_the_ca_file(
    secure_settings: LeadflowSettings,
    certificates: Certificates,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    fields = {**secure_settings.model_dump(), "kafka_ssl_ca_file": certificates.other_ca_file}
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'pipeline.db'}"
    app = create_pipeline(PipelineSettings(**fields, database_url=database_url))
    with serving(app) as url:
        await _not_ready(url)
        await eventually(lambda: _tries(app, "pipeline"), lambda tries: tries >= 3, timeout=30)
    lines = _kafka_lines(caplog, "pipeline-consumer")
    assert len(lines) == 1, [r.getMessage() for r in lines]
    message = lines[0].getMessage()
    assert "the Kafka broker's certificate at 127.0.0.1:" in message
    assert f"is not trusted by LEADFLOW_KAFKA_SSL_CA_FILE={certificates.other_ca_file}" in message
    assert not [r for r in caplog.records if r.exc_info], "no stack traces"


async def _tries(app: FastAPI, service: str) -> int:
    """How many times the service's Kafka loop has failed to get in so far."""
    loop: BackgroundLoop[Any] = app.state.consumer if service == "pipeline" else app.state.worker
    return loop.reconnection.failures


async def test_plain_gets_in_too_and_other_mistakes_are_named(
    secure_settings: LeadflowSettings,
) -> None:
    fields = secure_settings.model_dump()
    plain = LeadflowSettings(**{**fields, "kafka_sasl_mechanism": "PLAIN"})
    await check_connection(plain)
    await wait_until_ready(plain, timeout=30)  # an admin client of the factory, as PLAIN

    scram256 = LeadflowSettings(**{**fields, "kafka_sasl_mechanism": "SCRAM-SHA-256"})
    with pytest.raises(KafkaUnreachable) as lacking:
        await check_connection(scram256)
    assert "does not offer LEADFLOW_KAFKA_SASL_MECHANISM=SCRAM-SHA-256" in str(lacking.value)

    no_tls = {"kafka_sasl_mechanism": None, "kafka_ssl_ca_file": None}
    plaintext = LeadflowSettings(**{**fields, **no_tls, "kafka_security_protocol": "PLAINTEXT"})
    with pytest.raises(KafkaUnreachable) as wrong_protocol:
        await check_connection(plaintext)
    assert "LEADFLOW_KAFKA_SECURITY_PROTOCOL=PLAINTEXT" in str(wrong_protocol.value)

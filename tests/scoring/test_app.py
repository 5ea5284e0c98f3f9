"""scoring's HTTP surface: the active model, probes that tell the worker's health."""

from __future__ import annotations

import httpx
import pytest

from services.scoring.app import create_app
from services.scoring.settings import ScoringSettings
from shared.settings import LeadflowSettings
from tests.servers import serving
from tests.waiting import eventually

pytestmark = pytest.mark.integration


async def test_model_and_probes_on_a_running_worker(kafka_settings: LeadflowSettings) -> None:
    settings = ScoringSettings(**kafka_settings.model_dump())
    with serving(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            model = (await client.get("/v1/model")).json()
            assert model["version"] == "default-1"
            assert model["stages"]["prospect"]["fit_min"] == 50
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            ready = await eventually(lambda: client.get("/readyz"), lambda r: r.status_code == 200)
            assert ready.json()["checks"] == {"worker": True, "kafka": True, "accounts": True}
            assert "leadflow_scoring_events_total" in (await client.get("/metrics")).text


async def test_a_worker_that_cannot_reach_kafka_is_not_ready() -> None:
    settings = ScoringSettings(kafka_bootstrap_servers="127.0.0.1:1")
    with serving(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/readyz")).status_code == 503

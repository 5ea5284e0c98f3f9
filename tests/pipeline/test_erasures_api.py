"""The erasure endpoints' refusals, decided without Kafka (nothing listens where it points)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline.app import create_app
from services.pipeline.settings import PipelineSettings
from shared.api_keys import format_line, key_digest
from tests.pipeline.records import snapshot

Sessions = async_sessionmaker[AsyncSession]


ADMIN, READER = "lf_erasures-admin", "lf_erasures-reader"
KEYS = ";".join(
    format_line(name, scopes, key_digest(key.encode()))
    for name, key, scopes in [("privacy", ADMIN, ["admin"]), ("dashboard", READER, ["leads:read"])]
)


async def serve(database_url: str, api_keys: str = "") -> AsyncIterator[httpx.AsyncClient]:
    settings = PipelineSettings(
        kafka_bootstrap_servers="127.0.0.1:1",
        database_url=database_url,
        migrate_on_start=False,
        pipeline_consume=False,
        api_keys=api_keys,
    )
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pipeline") as client:
            yield client


@pytest.fixture
async def client(database_url: str, sessions: Sessions) -> AsyncIterator[httpx.AsyncClient]:
    async for client in serve(database_url):
        yield client


@pytest.fixture
async def protected(database_url: str, sessions: Sessions) -> AsyncIterator[httpx.AsyncClient]:
    async for client in serve(database_url, KEYS):
        yield client


async def test_erasing_and_its_status_need_admin(protected: httpx.AsyncClient) -> None:
    for method, path in (("DELETE", "/v1/leads/ada@example.com"), ("GET", "/v1/erasures/e-1")):
        assert (await protected.request(method, path)).status_code == 401
        reader = await protected.request(method, path, headers={"X-API-Key": READER})
        assert reader.status_code == 403
        assert "lacks scope admin" in reader.json()["detail"]
    # with admin the request gets through: to Kafka, which is not there, and to the table
    erase = await protected.delete("/v1/leads/ada@example.com", headers={"X-API-Key": ADMIN})
    assert erase.status_code == 503
    status = await protected.get("/v1/erasures/e-1", headers={"X-API-Key": ADMIN})
    assert status.status_code == 404


async def test_a_lead_id_no_event_could_carry_is_422(client: httpx.AsyncClient) -> None:
    for bad in ("ada%00x", "%20%20", "a" * 257):
        response = await client.delete(f"/v1/leads/{bad}")
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"] == ["path", "lead_id"]


async def test_an_unknown_erase_id_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/erasures/no-such-id")
    assert response.status_code == 404
    assert "unknown" in response.json()["detail"]
    assert (await client.get("/v1/erasures/x%00y")).status_code == 422


async def test_kafka_not_confirming_is_503_and_leaves_no_request(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    before = await snapshot(sessions)
    response = await client.delete("/v1/leads/ada@example.com")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "retry" in response.json()["detail"]
    assert await snapshot(sessions) == before
    async with sessions() as session:
        count = (await session.execute(text("SELECT COUNT(*) FROM erasures"))).scalar_one()
    assert count == 0


async def test_a_405_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    lead = await client.request("PATCH", "/v1/leads/ada@example.com")
    assert lead.status_code == 405
    assert lead.headers["Allow"] == "DELETE, GET"
    history = await client.request("PUT", "/v1/leads/ada@example.com/history")
    assert history.headers["Allow"] == "GET"

"""ingest's HTTP refusals: each one a clear 4xx, decided before Kafka is involved."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY

from services.ingest.app import Accepted, accepted, create_app
from services.ingest.settings import IngestSettings
from shared.api_keys import format_line, key_digest
from shared.events import EventIn

EVENT = {
    "event_id": "e-1",
    "type": "email.opened",
    "lead_id": "ada@example.com",
    "occurred_at": "2026-11-20T10:00:00Z",
}
DEAL_WON = {**EVENT, "event_id": "e-2", "type": "deal.won"}


def key_line(name: str, key: str, *scopes: str) -> str:
    return format_line(name, scopes, key_digest(key.encode()))


KEYS = ";".join(
    [
        key_line("mailer", "k-1", "events:write"),
        key_line("crm", "k-2", "events:write", "crm:write"),
        key_line("dealdesk", "k-3", "crm:write"),
        key_line("ops", "k-4", "leads:read"),
    ]
)


async def serve(api_keys: str, **options: object) -> AsyncIterator[httpx.AsyncClient]:
    # Nothing listens on this port: any request that reached Kafka would fail with 503.
    settings = IngestSettings(
        kafka_bootstrap_servers="127.0.0.1:1",
        api_keys=api_keys,
        max_body_bytes=4096,
        publish_timeout_seconds=0.5,
        **options,  # type: ignore[arg-type]
    )
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async for client in serve(KEYS):
        yield client


@pytest.fixture
async def keyless_client() -> AsyncIterator[httpx.AsyncClient]:
    async for client in serve(""):
        yield client


async def test_a_missing_or_wrong_api_key_is_401(client: httpx.AsyncClient) -> None:
    missing = await client.post("/v1/events", json=EVENT)
    assert missing.status_code == 401
    assert "credentials are required" in missing.json()["detail"]
    wrong = await client.post("/v1/events", json=EVENT, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "unknown API key"
    assert "nope" not in wrong.text
    # a key that is not ASCII is just as wrong (compare_digest refuses non-ASCII str: was a 500)
    latin = await client.post("/v1/events", json=EVENT, headers={b"X-API-Key": b"k-\xe9"})
    assert latin.status_code == 401
    empty = await client.post("/v1/events", json=EVENT, headers={"X-API-Key": ""})
    assert empty.status_code == 401
    basic = await client.post("/v1/events", json=EVENT, headers={"Authorization": "Basic azox"})
    assert basic.status_code == 401
    assert "Basic user name with an empty password" in basic.json()["detail"]
    assert wrong.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers", [{"X-API-Key": "k-1"}, {"Authorization": "Bearer k-1"}], ids=["header", "bearer"]
)
async def test_a_key_is_taken_from_either_header(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post("/v1/events", json={**EVENT, "lead_id": ""}, headers=headers)
    assert response.status_code == 422


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/batch"])
async def test_the_api_key_is_checked_before_the_body(client: httpx.AsyncClient, path: str) -> None:
    headers = {"Content-Type": "text/csv"}
    assert (await client.post(path, content=b"x", headers=headers)).status_code == 401
    with_key = await client.post(path, content=b"x", headers={**headers, "X-API-Key": "k-1"})
    assert with_key.status_code == 415
    reader = await client.post(path, content=b"x", headers={**headers, "X-API-Key": "k-4"})
    assert reader.status_code == 403
    assert reader.json()["detail"] == f"key 'ops' lacks scope events:write needed for POST {path}"


def publish_count(endpoint: str) -> float:
    labels = {"endpoint": endpoint}
    return REGISTRY.get_sample_value("leadflow_ingest_publish_seconds_count", labels) or 0.0


def rejected(reason: str) -> float:
    labels = {"reason": reason}
    return REGISTRY.get_sample_value("leadflow_ingest_requests_rejected_total", labels) or 0.0


async def test_crm_events_need_crm_write_and_nothing_of_the_batch_is_published(
    client: httpx.AsyncClient,
) -> None:
    before, refused = publish_count("batch"), rejected("forbidden")
    response = await client.post(
        "/v1/events/batch", json=[EVENT, DEAL_WON], headers={"X-API-Key": "k-1"}
    )
    assert response.status_code == 403
    assert response.json()["detail"] == "key 'mailer' lacks scope crm:write needed for deal.won"
    assert publish_count("batch") == before  # refused before the publisher saw any of it
    assert rejected("forbidden") == refused + 1
    single = await client.post("/v1/events", json=DEAL_WON, headers={"X-API-Key": "k-1"})
    assert single.status_code == 403


async def test_each_event_needs_the_scope_of_its_type(client: httpx.AsyncClient) -> None:
    # Past authorisation, the write reaches the (unreachable) broker: 503.
    both = await client.post(
        "/v1/events/batch", json=[EVENT, DEAL_WON], headers={"X-API-Key": "k-2"}
    )
    assert both.status_code == 503
    crm_only = await client.post("/v1/events", json=DEAL_WON, headers={"X-API-Key": "k-3"})
    assert crm_only.status_code == 503
    engagement = await client.post("/v1/events", json=EVENT, headers={"X-API-Key": "k-3"})
    assert engagement.status_code == 403
    assert "lacks scope events:write needed for email.opened" in engagement.json()["detail"]


async def test_without_configured_keys_none_is_asked_for(
    keyless_client: httpx.AsyncClient,
) -> None:
    response = await keyless_client.post("/v1/events", json={**EVENT, "lead_id": ""})
    assert response.status_code == 422
    crm = await keyless_client.post("/v1/events", json=DEAL_WON)
    assert crm.status_code == 503  # open: on to the (unreachable) broker


async def test_a_key_over_its_rate_is_429_with_retry_after() -> None:
    async for client in serve(KEYS, rate_limit_per_second=0.01, rate_limit_burst=2):
        bad = {**EVENT, "lead_id": ""}
        for _ in range(2):
            response = await client.post("/v1/events", json=bad, headers={"X-API-Key": "k-1"})
            assert response.status_code == 422
        limited = await client.post("/v1/events", json=bad, headers={"X-API-Key": "k-1"})
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 100
        assert "key 'mailer' is over its rate limit" in limited.json()["detail"]
        # each key has its own bucket
        other = await client.post("/v1/events", json=bad, headers={"X-API-Key": "k-2"})
        assert other.status_code == 422
        # an unknown key is refused before it could use any bucket
        assert (await client.post("/v1/events", json=bad)).status_code == 401


async def test_invalid_events_are_422_with_fields(client: httpx.AsyncClient) -> None:
    bad = {**EVENT, "lead_id": ""}
    response = await client.post("/v1/events", json=bad, headers={"X-API-Key": "k-2"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "lead_id"]


async def test_the_internal_erase_type_is_422_in_every_shape(
    keyless_client: httpx.AsyncClient,
) -> None:
    erase = {**EVENT, "type": "lead.erased"}
    single = await keyless_client.post("/v1/events", json=erase)
    assert single.status_code == 422
    [error] = single.json()["detail"]
    assert error["loc"] == ["body", "type"]
    assert "DELETE /v1/leads/" in error["msg"]
    batch = await keyless_client.post("/v1/events/batch", json=[EVENT, erase])
    assert [e["loc"] for e in batch.json()["detail"]] == [["body", 1, "type"]]
    cloudevent = {
        "specversion": "1.0",
        "id": "ce-1",
        "type": "lead.erased",
        "source": "crm",
        "subject": "ada@example.com",
        "time": "2026-11-20T10:00:00Z",
    }
    structured = await keyless_client.post(
        "/v1/events",
        content=orjson.dumps(cloudevent),
        headers={"Content-Type": "application/cloudevents+json"},
    )
    assert structured.status_code == 422
    assert structured.json()["detail"][0]["loc"] == ["body", "type"]


async def test_a_large_body_is_413_even_without_content_length(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    response = await client.post(
        "/v1/events/batch",
        content=chunks(),
        headers={"X-API-Key": "k-1", "Content-Type": "application/json"},
    )
    assert response.status_code == 413


async def test_a_wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events", content=b"lead=ada", headers={"X-API-Key": "k-1", "Content-Type": "text/csv"}
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


async def test_kafka_unreachable_is_503_with_retry_after(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events", json=EVENT, headers={"X-API-Key": "k-1"})
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"kafka": False}


async def test_probes_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert "leadflow_ingest_requests_rejected_total" in (await client.get("/metrics")).text
    schema = (await client.get("/openapi.json")).json()
    assert "EventIn" in schema["components"]["schemas"]
    assert (
        "application/cloudevents+json"
        in (schema["paths"]["/v1/events"]["post"]["requestBody"]["content"])
    )


OPERATIONS = [("/v1/events", "post"), ("/v1/events/batch", "post")]


async def test_the_document_declares_the_keys_the_server_asks_for(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["ApiKeyHeader"]["description"],
    }
    assert schemes["ApiKeyBearer"]["scheme"] == "bearer"
    assert "JWT" not in schemes  # no JWKS configured
    for path, method in OPERATIONS:
        operation = schema["paths"][path][method]
        assert operation["security"] == [{"ApiKeyHeader": []}, {"ApiKeyBearer": []}]
        assert operation["x-required-scope"] == "events:write"
        assert "`crm:write` instead for deal.won" in operation["description"]
        assert {"401", "403"} <= set(operation["responses"])
        assert "429" not in operation["responses"]  # no rate limit configured
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert "security" not in schema["paths"][probe]["get"]


async def test_an_open_service_declares_no_security(keyless_client: httpx.AsyncClient) -> None:
    schema = (await keyless_client.get("/openapi.json")).json()
    assert "securitySchemes" not in schema.get("components", {})
    for path, method in OPERATIONS:
        operation = schema["paths"][path][method]
        assert "security" not in operation
        assert not {"401", "403", "429"} & set(operation["responses"])


async def test_a_rate_limit_is_documented() -> None:
    async for client in serve(KEYS, rate_limit_per_second=5):
        schema = (await client.get("/openapi.json")).json()
        for path, method in OPERATIONS:
            answer = schema["paths"][path][method]["responses"]["429"]
            assert "Retry-After" in answer["headers"]


def test_accepted_is_the_documented_body() -> None:
    events = [EventIn.model_validate({**EVENT, "event_id": f"zoë-{i}/\u2028"}) for i in range(2)]
    response = accepted(events)
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"
    expected = Accepted(accepted=2, event_ids=[e.event_id for e in events])
    assert response.body == expected.model_dump_json().encode()
    assert orjson.loads(response.body) == expected.model_dump()


async def test_a_refused_write_still_counts_its_publish_time(client: httpx.AsyncClient) -> None:
    before = publish_count("single")
    response = await client.post("/v1/events", json=EVENT, headers={"X-API-Key": "k-1"})
    assert response.status_code == 503
    assert publish_count("single") == before + 1

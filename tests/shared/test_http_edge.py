"""What wraps every answer: security headers, CORS, 500s, capped 422s, metrics, access log."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from prometheus_client import REGISTRY
from pythonjsonlogger.json import JsonFormatter

from services.ingest.app import create_app as create_ingest
from services.pipeline.app import create_app as create_pipeline
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.api_keys import format_line, key_digest
from shared.errors import MAX_REPORTED_ERRORS
from shared.http_edge import install_http_edge
from shared.settings import LeadflowSettings

SECRET_KEY = "lf_very-secret-key-value"


def edge_app(settings: LeadflowSettings | None = None) -> FastAPI:
    app = FastAPI()
    install_http_edge(app, settings or LeadflowSettings())

    @app.get("/items/{item_id}")
    async def item(item_id: int, request: Request) -> dict[str, int]:
        if request.headers.get("authorization"):
            request.state.principal = SimpleNamespace(name="mailer", scopes=frozenset())
        return {"item_id": item_id}

    @app.get("/cached")
    async def cached() -> Response:
        return Response("{}", media_type="application/json", headers={"Cache-Control": "max-age=9"})

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("SELECT secret FROM leads WHERE path='/srv/leadflow/app.py'")

    @app.post("/numbers")
    async def numbers(values: list[int]) -> int:
        return len(values)

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=edge_app(), client=("127.0.0.1", 40123))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_every_answer_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    for path in ("/items/1", "/items/x", "/nowhere", "/boom", "/openapi.json"):
        response = await client.get(path)
        assert_security_headers(response)
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["content-security-policy"].startswith("default-src 'none'")


async def test_the_docs_page_may_load_its_scripts_but_not_be_framed(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert_security_headers(response)
    assert response.headers["content-security-policy"] == "frame-ancestors 'none'"


async def test_a_header_the_app_sets_is_kept(client: httpx.AsyncClient) -> None:
    response = await client.get("/cached")
    assert response.headers.get_list("cache-control") == ["max-age=9"]


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    origin = {"Origin": "https://evil.example"}
    response = await client.get("/items/1", headers=origin)
    assert "access-control-allow-origin" not in response.headers
    preflight = await client.options(
        "/items/1", headers={**origin, "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in preflight.headers


async def test_cors_answers_only_the_configured_origins() -> None:
    settings = LeadflowSettings(cors_origins="https://app.example, https://crm.example")
    transport = httpx.ASGITransport(app=edge_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        allowed = await http.get("/items/1", headers={"Origin": "https://crm.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://crm.example"
        preflight = await http.options(
            "/items/1",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert_security_headers(preflight)
        other = await http.get("/items/1", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_a_failing_route_answers_500_without_internals_and_logs_the_traceback(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = await client.get("/boom")
    assert response.status_code == 500
    body = response.json()
    assert set(body) == {"detail", "request_id"}
    assert body["detail"] == "internal error"
    assert response.headers["x-request-id"] == body["request_id"]
    for leak in ("SELECT", "/srv/", "Traceback", "RuntimeError"):
        assert leak not in response.text
    errors = [r for r in caplog.records if r.name == "leadflow.errors"]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert body["request_id"] in errors[0].getMessage()
    access = [r for r in caplog.records if r.name == "leadflow.access"]
    assert [(r.status, r.request_id) for r in access] == [(500, body["request_id"])]  # type: ignore[attr-defined]


async def test_a_validation_error_lists_at_most_the_cap_and_says_how_many_more(
    client: httpx.AsyncClient,
) -> None:
    count = MAX_REPORTED_ERRORS + 50
    response = await client.post("/numbers", json=["x"] * count)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert len(detail) == MAX_REPORTED_ERRORS + 1
    assert detail[-1] == {
        "loc": ["body"],
        "msg": "50 more errors not shown",
        "type": "too_many_errors",
    }
    few = await client.post("/numbers", json=["x", "y"])
    assert len(few.json()["detail"]) == 2


def sample(route: str, method: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "leadflow_http_requests_total", {"route": route, "method": method, "status": status}
    )
    return value or 0.0


async def test_requests_are_counted_by_route_template_method_and_status(
    client: httpx.AsyncClient,
) -> None:
    before = {
        "ok": sample("/items/{item_id}", "GET", "200"),
        "bad": sample("/items/{item_id}", "GET", "422"),
        "unmatched": sample("unmatched", "GET", "404"),
        "other": sample("unmatched", "OTHER", "404"),
        "docs": sample("/docs", "GET", "200"),
    }
    await client.get("/items/1")
    await client.get("/items/2")
    await client.get("/items/nope")
    await client.get("/random/path/123")
    await client.request("BREW", "/random")
    await client.get("/docs")
    assert sample("/items/{item_id}", "GET", "200") == before["ok"] + 2
    assert sample("/items/{item_id}", "GET", "422") == before["bad"] + 1
    assert sample("unmatched", "GET", "404") == before["unmatched"] + 1
    assert sample("unmatched", "OTHER", "404") == before["other"] + 1
    assert sample("/docs", "GET", "200") == before["docs"] + 1
    histogram = REGISTRY.get_sample_value(
        "leadflow_http_request_duration_seconds_count",
        {"route": "/items/{item_id}", "method": "GET"},
    )
    assert histogram is not None
    assert histogram >= 3


async def test_the_access_log_names_the_key_never_the_key_itself(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="leadflow.access"):
        await client.get("/items/7", headers={"Authorization": f"Bearer {SECRET_KEY}"})
        await client.get("/items/8")
    lines = [r for r in caplog.records if r.name == "leadflow.access"]
    assert len(lines) == 2
    named, anonymous = lines
    fields = {k: getattr(named, k) for k in ("method", "route", "status", "client", "key_name")}
    assert fields == {
        "method": "GET",
        "route": "/items/{item_id}",
        "status": 200,
        "client": "127.0.0.1:40123",
        "key_name": "mailer",
    }
    assert named.duration_ms >= 0  # type: ignore[attr-defined]
    assert anonymous.key_name is None  # type: ignore[attr-defined]
    formatted = JsonFormatter("%(message)s").format(named)
    assert json.loads(formatted)["key_name"] == "mailer"
    assert SECRET_KEY not in formatted
    assert all(SECRET_KEY not in r.getMessage() for r in caplog.records)


async def test_the_access_log_can_be_turned_off(caplog: pytest.LogCaptureFixture) -> None:
    transport = httpx.ASGITransport(app=edge_app(LeadflowSettings(access_log=False)))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with caplog.at_level(logging.INFO, logger="leadflow.access"):
            await http.get("/items/1")
    assert not [r for r in caplog.records if r.name == "leadflow.access"]


@pytest.mark.parametrize("create", [create_ingest, create_pipeline, create_scoring])
async def test_every_service_is_wrapped(create: type[FastAPI]) -> None:
    transport = httpx.ASGITransport(app=create())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        for path in ("/healthz", "/nowhere"):
            response = await http.get(path)
            assert_security_headers(response)
            assert response.headers["cache-control"] == "no-store"


async def test_the_access_log_and_metrics_see_what_authentication_decided(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "lf_reader-key-value"
    keys = format_line("reader", ["leads:read"], key_digest(key.encode()))
    app = create_scoring(ScoringSettings(api_keys=keys, kafka_bootstrap_servers="127.0.0.1:1"))
    transport = httpx.ASGITransport(app=app, client=("10.0.0.7", 5555))
    before = sample("/v1/model", "GET", "401")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with caplog.at_level(logging.INFO, logger="leadflow.access"):
            allowed = await http.get("/v1/model", headers={"Authorization": f"Bearer {key}"})
            refused = await http.get("/v1/model", headers={"X-API-Key": "lf_wrong"})
    assert (allowed.status_code, refused.status_code) == (200, 401)
    assert sample("/v1/model", "GET", "401") == before + 1
    lines = [r for r in caplog.records if r.name == "leadflow.access"]
    assert [(r.status, r.key_name) for r in lines] == [(200, "reader"), (401, None)]  # type: ignore[attr-defined]
    assert all(key not in r.getMessage() and "lf_wrong" not in r.getMessage() for r in lines)

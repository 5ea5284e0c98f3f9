"""A database that cannot be reached is a 503 to retry; a broken query stays a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError, ProgrammingError

from shared.database_outage import DATABASE_DOWN, install_database_outage


def outage_app() -> FastAPI:
    app = FastAPI(responses=DATABASE_DOWN)
    install_database_outage(app)

    @app.get("/down")
    async def down() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))

    @app.get("/refused")
    async def refused() -> None:
        raise ConnectionRefusedError("connection refused")

    @app.get("/bug")
    async def bug() -> None:
        raise ProgrammingError("SELECT nonsense", {}, Exception("syntax error"))

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=outage_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.mark.parametrize("path", ["/down", "/refused"])
async def test_a_database_that_does_not_answer_is_a_503_with_retry_after(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {"detail": "the database is unavailable; retry later"}


async def test_an_error_in_a_query_is_not_an_outage(client: httpx.AsyncClient) -> None:
    response = await client.get("/bug")
    assert response.status_code == 500
    assert "nonsense" not in response.text


async def test_every_operation_documents_the_503(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    for path in ("/down", "/refused", "/bug"):
        answer = document["paths"][path]["get"]["responses"]["503"]
        assert "Retry-After" in answer["headers"]

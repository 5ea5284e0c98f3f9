"""The account routes over the real store, on SQLite and PostgreSQL alike: the listing's
two orders and their cursors, an account with its contacts, errors and scopes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline import store
from services.pipeline.app import create_app
from services.pipeline.settings import PipelineSettings
from shared.account_events import AccountScore
from shared.api_keys import format_line, key_digest
from tests.pipeline.records import account_score

Sessions = async_sessionmaker[AsyncSession]

READER = "lf_accounts-reader"
MAILER = "lf_accounts-mailer"
KEYS = ";".join(
    format_line(name, scopes, key_digest(key.encode()))
    for name, key, scopes in [
        ("dashboard", READER, ["leads:read"]),
        ("mailer", MAILER, ["events:write"]),
    ]
)


async def _client(settings: PipelineSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pipeline") as client:
            yield client


@pytest.fixture
async def client(database_url: str, sessions: Sessions) -> AsyncIterator[httpx.AsyncClient]:
    settings = PipelineSettings(database_url=database_url, pipeline_consume=False)
    async for client in _client(settings):
        yield client


@pytest.fixture
async def protected(database_url: str, sessions: Sessions) -> AsyncIterator[httpx.AsyncClient]:
    settings = PipelineSettings(database_url=database_url, pipeline_consume=False, api_keys=KEYS)
    async for client in _client(settings):
        yield client


async def record(sessions: Sessions, *scores: AccountScore) -> None:
    await store.record_batch(sessions, [], [], account_scores=scores)


async def test_an_account_with_its_contacts(client: httpx.AsyncClient, sessions: Sessions) -> None:
    traits = {"name": "Acme", "domain": "acme.com", "employees": 500}
    contacts = {"ada@acme.com": 115.0, "bob@acme.com": 20.0, "cyd@acme.com": 75.0}
    await record(sessions, account_score("acme.com", 4, contacts, fit=20, traits=traits))

    response = await client.get("/v1/accounts/acme.com")
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("account_id", "name", "domain", "sequence")} == {
        "account_id": "acme.com",
        "name": "Acme",
        "domain": "acme.com",
        "sequence": 4,
    }
    assert (body["fit"], body["contact_total_sum"], body["contact_total_max"]) == (20, 210, 115)
    assert (body["total"], body["contacts"], body["engaged_contacts"]) == (230, 3, 2)
    assert body["traits"] == traits
    assert [(m["lead_id"], m["stage"], m["total"]) for m in body["members"]] == [
        ("ada@acme.com", "prospect", 115.0),
        ("cyd@acme.com", "prospect", 75.0),
        ("bob@acme.com", "lead", 20.0),
    ]
    assert body["members_truncated"] is False
    assert body["updated_at"].endswith("Z")


async def test_account_ids_with_slashes_and_reserved_characters(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    odd = "crm/42/acme #1?"
    await record(sessions, account_score(odd, 1, {"ada": 1.0}))
    response = await client.get(f"/v1/accounts/{quote(odd, safe='/')}")
    assert response.status_code == 200
    assert response.json()["account_id"] == odd


async def test_an_unknown_account_is_404_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/accounts/nobody.com")
    assert response.status_code == 404
    assert response.json() == {"detail": "account 'nobody.com' is unknown"}


async def test_an_account_id_with_control_characters_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/accounts/acme%00.com")
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["path", "account_id"]]


async def test_the_listing_pages_through_every_account_by_total(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    totals = [5.0, 80.0, 80.0, 80.0, 42.0, -3.0]
    await record(sessions, *(account_score(f"a{i}", 1, {f"l{i}": t}) for i, t in enumerate(totals)))
    seen: list[tuple[float, str]] = []
    params: dict[str, str | int] = {"limit": 2}
    while True:
        page = (await client.get("/v1/accounts", params=params)).json()
        seen.extend((item["total"], item["account_id"]) for item in page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == sorted(((t, f"a{i}") for i, t in enumerate(totals)), key=lambda k: (-k[0], k[1]))

    high = (await client.get("/v1/accounts", params={"min_score": 42})).json()
    assert [item["account_id"] for item in high["items"]] == ["a1", "a2", "a3", "a4"]
    assert high["next_cursor"] is None
    assert "members" not in high["items"][0]  # the listing is narrow


async def test_the_change_order_lists_each_written_account_until_an_empty_page(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    await record(sessions, account_score("b", 1, {"x": 1.0}), account_score("a", 1, {"y": 1.0}))
    first = (await client.get("/v1/accounts", params={"updated_after": "0", "limit": 1})).json()
    assert [item["account_id"] for item in first["items"]] == ["a"]
    await record(sessions, account_score("a", 2, {"y": 9.0}))
    rest = (await client.get("/v1/accounts", params={"updated_after": first["next_cursor"]})).json()
    assert [(i["account_id"], i["sequence"]) for i in rest["items"]] == [("b", 1), ("a", 2)]
    empty = (await client.get("/v1/accounts", params={"updated_after": rest["next_cursor"]})).json()
    assert empty == {"items": [], "next_cursor": rest["next_cursor"]}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"min_score": "nan"}, "min_score"),
        ({"min_score": "high"}, "min_score"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "WyJhIiwiYiJd"}, "cursor"),
        ({"updated_after": "bm90LW91cnM"}, "updated_after"),
        ({"updated_after": "not base64!"}, "updated_after"),
        ({"updated_after": "0", "cursor": "WzEsImEiXQ"}, "cursor"),
    ],
)
async def test_invalid_listing_parameters_are_422_naming_the_field(
    client: httpx.AsyncClient, query: dict[str, str | int], field: str
) -> None:
    response = await client.get("/v1/accounts", params=query)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["query", field]]


@pytest.mark.parametrize("path", ["/v1/accounts", "/v1/accounts/acme.com"])
async def test_every_account_read_needs_leads_read(
    protected: httpx.AsyncClient, sessions: Sessions, path: str
) -> None:
    await record(sessions, account_score("acme.com", 1, {"ada@acme.com": 10.0}))
    anonymous = await protected.get(path)
    assert anonymous.status_code == 401
    mailer = await protected.get(path, headers={"X-API-Key": MAILER})
    assert mailer.status_code == 403
    assert "ada@acme.com" not in mailer.text
    reader = await protected.get(path, headers={"X-API-Key": READER})
    assert reader.status_code == 200
    assert (await protected.get("/v1/accounts?limit=0")).status_code == 401  # before the query


async def test_the_document_describes_the_account_routes(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    listing = document["paths"]["/v1/accounts"]["get"]
    detail = document["paths"]["/v1/accounts/{account_id}"]["get"]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AccountPage"
    }
    assert detail["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AccountDetail"
    }
    assert "404" in detail["responses"]
    schemas = document["components"]["schemas"]
    assert {"Account", "AccountContact", "AccountDetail"} <= set(schemas)
    assert set(schemas["AccountDetail"]["properties"]) >= {"members", "traits", "breakdown"}

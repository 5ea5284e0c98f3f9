"""The endpoints API: validation naming the field, the URL policy, CRUD, scopes, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.webhooks import store
from services.webhooks.app import create_app
from services.webhooks.signing import new_secret
from services.webhooks.tables import EndpointRow
from shared.api_keys import create_key
from shared.database import Database
from shared.events import Stage
from tests.servers import serving
from tests.waiting import eventually
from tests.webhooks.conftest import Webhooks, webhooks_settings
from tests.webhooks.receivers import ManualClock, Receiver, receiving
from tests.webhooks.records import change, update


@pytest.fixture
async def strict(webhooks_database: str) -> AsyncIterator[httpx.AsyncClient]:
    """The service as deployed: no allow-list (http allowed, to test addresses alone)."""
    settings = webhooks_settings(
        webhooks_database, webhooks_allowed_networks="", webhooks_allow_http=True
    )
    with serving(create_app(settings, ManualClock())) as url:
        async with httpx.AsyncClient(base_url=url) as api:
            yield api


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::1]:8080/hook", "loopback"),
        ("http://localhost:8080/hook", "loopback"),
        ("http://[::ffff:10.0.0.1]/hook", "IPv4-mapped"),
        ("http://0.0.0.0/hook", "unspecified"),
    ],
)
async def test_urls_that_reach_inside_are_refused_at_creation(
    strict: httpx.AsyncClient, url: str, reason: str
) -> None:
    refused = await strict.post("/v1/endpoints", json={"url": url})
    assert refused.status_code == 422
    [error] = refused.json()["detail"]
    assert error["loc"] == ["body", "url"]
    assert reason in error["msg"]
    assert (await strict.get("/v1/endpoints")).json()["items"] == []


async def test_plain_http_needs_the_setting(webhooks_database: str) -> None:
    settings = webhooks_settings(webhooks_database, webhooks_allow_http=False)
    with serving(create_app(settings, ManualClock())) as url:
        async with httpx.AsyncClient(base_url=url) as api:
            refused = await api.post("/v1/endpoints", json={"url": "http://127.0.0.1/x"})
    assert refused.status_code == 422
    assert "https" in refused.json()["detail"][0]["msg"]


async def test_a_url_refused_at_delivery_is_not_posted_to(
    webhooks_database: str, strict: httpx.AsyncClient
) -> None:
    """DNS can change after creation: the same check runs before each attempt."""
    database = Database.connect(webhooks_database, sqlite_immediate=True)
    with receiving(Receiver()) as receiver:
        now = datetime.now(UTC) - timedelta(hours=1)  # due by the service's clock
        async with database.sessions() as session:
            session.add(
                EndpointRow(
                    endpoint_id="ep_rebound",
                    url=receiver.url.replace("127.0.0.1", "localhost"),
                    description="",
                    event_types=["lead.stage_changed"],
                    filters={},
                    concurrency=1,
                    secret="plain:" + new_secret(),
                    created_at=now,
                    updated_at=now,
                )
            )
            await session.commit()
        await store.record_batch(database.sessions, [change("ada", 1, Stage.PROSPECT)], [], now)

        async def attempted() -> list[dict[str, object]]:
            page = await strict.get("/v1/endpoints/ep_rebound/messages")
            return [m for m in page.json()["items"] if m["attempts"]]

        [message] = await eventually(attempted, lambda ms: len(ms) == 1)
        detail = await strict.get(f"/v1/endpoints/ep_rebound/messages/{message['message_id']}")
        [attempt] = detail.json()["attempt_log"]
        assert attempt["outcome"] == "refused"
        assert "loopback" in attempt["error"]
        assert receiver.deliveries == []
        assert receiver.refused == []
    await database.dispose()


async def test_bad_fields_are_named(webhooks: Webhooks) -> None:
    cases = [
        ({"url": "not a url"}, ["body", "url"]),
        (
            {"url": "http://127.0.0.1/x", "event_types": ["lead.deleted"]},
            ["body", "event_types", 0],
        ),
        (
            {"url": "http://127.0.0.1/x", "filters": {"to_stage": ["customer"]}},
            ["body", "filters", "to_stage"],
        ),
        ({"url": "http://127.0.0.1/x", "concurrency": 0}, ["body", "concurrency"]),
        ({"url": "http://127.0.0.1/x", "colour": "red"}, ["body", "colour"]),
    ]
    for body, loc in cases:
        refused = await webhooks.api.post("/v1/endpoints", json=body)
        assert refused.status_code == 422, body
        assert refused.json()["detail"][0]["loc"] == loc


async def test_create_list_update_disable_delete(webhooks: Webhooks) -> None:
    created = await webhooks.endpoint(
        "http://127.0.0.1:9/a",
        description="HubSpot",
        event_types=["lead.stage_changed", "lead.score_changed"],
        filters={"to_stages": ["opportunity", "customer"], "score_thresholds": [50]},
        rate_limit=5,
    )
    endpoint_id = created["endpoint_id"]
    assert created["secret"].startswith("whsec_")
    assert created["filters"]["to_stages"] == ["opportunity", "customer"]
    listed = (await webhooks.api.get("/v1/endpoints")).json()["items"]
    assert [e["endpoint_id"] for e in listed] == [endpoint_id]
    assert "secret" not in listed[0]
    patched = await webhooks.api.patch(
        f"/v1/endpoints/{endpoint_id}", json={"description": "Salesforce", "rate_limit": None}
    )
    assert (patched.json()["description"], patched.json()["rate_limit"]) == ("Salesforce", None)
    assert patched.json()["filters"] == created["filters"]
    disabled = await webhooks.api.post(f"/v1/endpoints/{endpoint_id}/disable")
    assert disabled.json()["enabled"] is False
    assert (await webhooks.api.delete(f"/v1/endpoints/{endpoint_id}")).status_code == 204
    assert (await webhooks.api.get(f"/v1/endpoints/{endpoint_id}")).status_code == 404
    assert (await webhooks.api.delete(f"/v1/endpoints/{endpoint_id}")).status_code == 404


async def test_only_admin_keys_manage_endpoints(webhooks_database: str) -> None:
    admin, admin_line = create_key("ops", ["admin"])
    reader, reader_line = create_key("crm", ["leads:read"])
    settings = webhooks_settings(webhooks_database, api_keys=f"{admin_line};{reader_line}")
    with serving(create_app(settings, ManualClock())) as url:
        async with httpx.AsyncClient(base_url=url) as api:
            body = {"url": "http://127.0.0.1:9/a"}
            assert (await api.post("/v1/endpoints", json=body)).status_code == 401
            as_reader = {"Authorization": f"Bearer {reader}"}
            assert (await api.get("/v1/endpoints", headers=as_reader)).status_code == 403
            as_admin = {"Authorization": f"Bearer {admin}"}
            assert (await api.post("/v1/endpoints", json=body, headers=as_admin)).status_code == 201
            document = (await api.get("/openapi.json")).json()
    operation = document["paths"]["/v1/endpoints"]["post"]
    assert operation["x-required-scope"] == "admin"


async def test_the_openapi_document_describes_the_webhooks(webhooks: Webhooks) -> None:
    document = (await webhooks.api.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    assert set(document["webhooks"]) == {
        "lead.stage_changed",
        "lead.score_changed",
        "lead.created",
        "account.score_changed",
    }
    stage = document["webhooks"]["lead.stage_changed"]["post"]
    headers = {p["name"] for p in stage["parameters"] if p["in"] == "header"}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    data = document["components"]["schemas"]["StageChangedData"]["properties"]
    assert {"change_id", "sequence", "from_stage", "to_stage", "score", "model_version"} <= set(
        data
    )
    account = document["webhooks"]["account.score_changed"]["post"]
    assert {p["name"] for p in account["parameters"] if p["in"] == "header"} == headers
    data = document["components"]["schemas"]["AccountScoreChangedData"]["properties"]
    assert {"account_id", "sequence", "total", "previous_total", "contacts"} <= set(data)


async def test_metrics_count_deliveries_and_backlog(webhooks: Webhooks) -> None:
    with receiving(Receiver()) as receiver:
        endpoint_id = (await webhooks.endpoint(receiver.url))["endpoint_id"]
        await webhooks.publish([change("ada", 1, Stage.PROSPECT)])

        async def metrics() -> str:
            return (await webhooks.api.get("/metrics")).text

        wanted = (
            f'leadflow_webhooks_deliveries_total{{endpoint="{endpoint_id}",outcome="success"}} 1.0'
        )
        backlog = f'leadflow_webhooks_pending_messages{{endpoint="{endpoint_id}"}} 0.0'
        text = await eventually(metrics, lambda t: wanted in t and backlog in t)
        assert f'leadflow_webhooks_oldest_pending_seconds{{endpoint="{endpoint_id}"}} 0.0' in text
        assert "leadflow_webhooks_disabled_endpoints" in text


async def test_an_erased_lead_leaves_no_message_behind(webhooks: Webhooks) -> None:
    endpoint_id = (await webhooks.endpoint("http://127.0.0.1:9/closed"))["endpoint_id"]
    await webhooks.publish([change("ada", 1, Stage.PROSPECT), change("bob", 1, Stage.PROSPECT)])
    assert {m["lead_id"] for m in await webhooks.messages(endpoint_id)} == {"ada", "bob"}
    await store.record_batch(webhooks.database.sessions, [], [], webhooks.clock(), erased={"ada"})
    assert {m["lead_id"] for m in await webhooks.messages(endpoint_id)} == {"bob"}


async def test_a_later_subscriber_is_not_told_an_old_lead_is_new(webhooks: Webhooks) -> None:
    await webhooks.publish([], [update("ada", 1, 10)])  # nobody subscribed yet
    endpoint_id = (
        await webhooks.endpoint(
            "http://127.0.0.1:9/closed", event_types=["lead.created", "lead.score_changed"]
        )
    )["endpoint_id"]
    await webhooks.publish([], [update("ada", 2, 20), update("bob", 1, 5)])
    sent = [(m["event_type"], m["lead_id"]) for m in await webhooks.messages(endpoint_id)]
    assert sorted(sent) == [
        ("lead.created", "bob"),
        ("lead.score_changed", "ada"),
        ("lead.score_changed", "bob"),
    ]

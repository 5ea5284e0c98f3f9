"""The webhooks service on loopback, without Kafka unless a test asks: records go in
through the store, as the consumer would put them, and come out as real HTTP requests.

Each test gets a fresh database, on SQLite and on PostgreSQL (``webhooks_database``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.webhooks import store
from services.webhooks.app import create_app
from services.webhooks.settings import WebhooksSettings
from shared.account_events import AccountScore
from shared.database import Database
from shared.events import ScoreUpdate, StageChange
from tests.pipeline.conftest import (  # noqa: F401 (fixtures)
    ScratchDatabases,
    postgres_server_url,
    postgresql_databases,
    sqlite_databases,
)
from tests.servers import serving
from tests.webhooks.receivers import ManualClock

LOOPBACK = {
    "webhooks_allow_http": True,
    "webhooks_allowed_networks": "127.0.0.0/8,::1/128",
    "webhooks_poll_seconds": 0.02,
    "webhooks_timeout_seconds": 1.0,
}


@pytest.fixture(params=["sqlite", "postgresql"])
async def webhooks_database(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    kind: ScratchDatabases = request.getfixturevalue(f"{request.param}_databases")
    databases = kind.sibling()
    yield await databases.create()
    await databases.drop_all()


@dataclass
class Webhooks:
    api: httpx.AsyncClient
    database: Database
    clock: ManualClock
    settings: WebhooksSettings

    async def publish(
        self,
        changes: Sequence[StageChange] = (),
        updates: Sequence[ScoreUpdate] = (),
        accounts: Sequence[AccountScore] = (),
    ) -> int:
        """What the consumer does with a batch of records."""
        return await store.record_batch(
            self.database.sessions, changes, updates, self.clock(), account_scores=accounts
        )

    async def endpoint(self, url: str, **fields: Any) -> dict[str, Any]:
        created = await self.api.post("/v1/endpoints", json={"url": url, **fields})
        assert created.status_code == 201, created.text
        body: dict[str, Any] = created.json()
        return body

    async def messages(self, endpoint_id: str, **params: Any) -> list[dict[str, Any]]:
        page = await self.api.get(f"/v1/endpoints/{endpoint_id}/messages", params=params)
        assert page.status_code == 200, page.text
        items: list[dict[str, Any]] = page.json()["items"]
        return items


def webhooks_settings(database_url: str, **overrides: Any) -> WebhooksSettings:
    fields = {**LOOPBACK, "webhooks_consume": False, **overrides}
    return WebhooksSettings(webhooks_database_url=database_url, **fields)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def webhooks(webhooks_database: str, clock: ManualClock) -> AsyncIterator[Webhooks]:
    """The service with its deliverer and API, no consumer; the test publishes records."""
    settings = webhooks_settings(webhooks_database)
    database = Database.connect(webhooks_database, sqlite_immediate=True)
    with ExitStack() as servers:
        url = servers.enter_context(serving(create_app(settings, clock)))
        async with httpx.AsyncClient(base_url=url, timeout=30) as api:
            yield Webhooks(api, database, clock, settings)
    await database.dispose()

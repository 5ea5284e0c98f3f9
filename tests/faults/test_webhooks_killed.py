"""The webhooks service SIGKILLed while it delivers, and restarted: every stage change still
arrives, and always under the webhook-id it had (so receivers drop the repeats)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from devtools.broker import free_port
from devtools.processes import ServiceProcess
from devtools.synthetic import synthetic_stream
from tests.faults.deployment import Deployment, Platform
from tests.reference import reference
from tests.waiting import eventually
from tests.webhooks.receivers import Receiver, receiving

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


def webhooks_process(deployment: Deployment, tmp_path: Path) -> ServiceProcess:
    env = {
        **deployment.env,
        "LEADFLOW_WEBHOOKS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'webhooks.db'}",
        "LEADFLOW_WEBHOOKS_GROUP": f"{deployment.namespace}-webhooks",
        "LEADFLOW_WEBHOOKS_ALLOW_HTTP": "true",
        "LEADFLOW_WEBHOOKS_ALLOWED_NETWORKS": "127.0.0.0/8",
        "LEADFLOW_WEBHOOKS_SECRET_KEY": "a key only this test knows",
    }
    log = tmp_path / "webhooks.log"
    process = ServiceProcess("webhooks", env, port=free_port(), log_file=log).start()
    deployment.processes.append(process)
    process.wait_ready()
    return process


async def test_webhooks_killed_mid_delivery_and_restarted(
    deployment: Deployment, tmp_path: Path
) -> None:
    events = list(synthetic_stream(leads=300, events_per_lead=10, seed=31, run_id="hookkill"))
    expected = reference(events)
    changes = {c.change_id for lead in expected.values() for c in lead.changes}
    ingest = deployment.start("ingest")
    deployment.start("scoring")
    webhooks = webhooks_process(deployment, tmp_path)
    platform = Platform(ingest.url)
    with receiving(Receiver(delay=0.01)) as receiver:
        async with httpx.AsyncClient(base_url=webhooks.url, timeout=30) as api:
            created = await api.post(
                "/v1/endpoints",
                json={"url": receiver.url, "event_types": ["lead.stage_changed"], "concurrency": 4},
            )
            assert created.status_code == 201, created.text
            receiver.secrets = [created.json()["secret"]]
        try:
            await platform.post_all(events, batch_size=500)

            async def received() -> int:
                return len(receiver.deliveries)

            await eventually(received, lambda n: n >= len(changes) // 3, timeout=180)
            webhooks.kill()
            at_kill = len(receiver.deliveries)
            deployment.restart(webhooks, wait=True)
            arrived = await eventually(
                lambda: _change_ids(receiver), lambda ids: ids >= changes, timeout=300
            )
        finally:
            await platform.close()
    assert at_kill < len(changes)
    assert arrived == changes
    ids_of: dict[str, set[str]] = defaultdict(set)
    for delivery in receiver.deliveries:
        ids_of[delivery.payload["data"]["change_id"]].add(delivery.webhook_id)
        assert delivery.verified_by == frozenset(receiver.secrets)
    assert all(len(ids) == 1 for ids in ids_of.values())  # never under a new id


async def _change_ids(receiver: Receiver) -> set[str]:
    return {d.payload["data"]["change_id"] for d in receiver.deliveries}

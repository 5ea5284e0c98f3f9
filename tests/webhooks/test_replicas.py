"""Two webhooks replicas on one database: each due message is claimed by one of them, and a
claim left by a process that died is taken again once its lease ends.

On SQLite and on PostgreSQL; on PostgreSQL the claims of the two run concurrently, each
in its own connection, which is what the claim's second look at the row is for.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import ExitStack
from datetime import timedelta

import httpx

from services.webhooks import store
from services.webhooks.app import create_app
from services.webhooks.migrate import migrate
from shared.database import Database
from shared.events import Stage
from tests.servers import serving
from tests.waiting import eventually
from tests.webhooks.conftest import Webhooks, webhooks_settings
from tests.webhooks.receivers import ManualClock, Receiver, receiving
from tests.webhooks.records import change


async def test_two_claimers_at_once_never_take_the_same_message(
    webhooks: Webhooks,
) -> None:
    endpoint_id = (await webhooks.endpoint("http://127.0.0.1:9/hook"))["endpoint_id"]
    second = Database.connect(webhooks.settings.webhooks_database_url, sqlite_immediate=True)
    try:
        # stored while the service's own deliverer cannot reach them: a lease far ahead
        # of its clock is what the claimers below give, so only they take messages
        now = webhooks.clock() + timedelta(days=1)
        await store.record_batch(
            webhooks.database.sessions,
            [change(f"lead-{i}", 1, Stage.PROSPECT) for i in range(300)],
            [],
            now,
        )
        taken: list[list[int]] = [[], []]

        async def claimer(index: int, database: Database) -> None:
            while True:
                claimed = await store.claim(
                    database.sessions, {endpoint_id: 7}, now, now + timedelta(hours=1)
                )
                if not claimed:
                    return
                taken[index] += [c.message_id for c in claimed]

        await asyncio.gather(claimer(0, webhooks.database), claimer(1, second))
    finally:
        await second.dispose()
    everything = taken[0] + taken[1]
    assert len(everything) == len(set(everything))
    stored = await webhooks.messages(endpoint_id, limit=500)
    assert len(stored) == 300
    assert {m["message_id"] for m in stored} - set(everything) == set()


async def test_two_replicas_deliver_each_message_once(webhooks_database: str) -> None:
    await migrate(webhooks_database)
    clock = ManualClock()
    settings = webhooks_settings(webhooks_database)
    database = Database.connect(webhooks_database, sqlite_immediate=True)
    try:
        with receiving(Receiver()) as receiver, ExitStack() as replicas:
            first = replicas.enter_context(serving(create_app(settings, clock)))
            replicas.enter_context(serving(create_app(settings, clock)))
            async with httpx.AsyncClient(base_url=first, timeout=30) as api:
                created = await api.post("/v1/endpoints", json={"url": receiver.url})
                assert created.status_code == 201, created.text
                receiver.secrets = [created.json()["secret"]]
                changes = [change(f"lead-{i}", 1, Stage.PROSPECT) for i in range(400)]
                for start in range(0, len(changes), 50):
                    await store.record_batch(
                        database.sessions, changes[start : start + 50], [], clock()
                    )
                endpoint_id = created.json()["endpoint_id"]
                retried: set[object] = set()

                async def received() -> int:
                    # An attempt that failed on the way (a keep-alive connection the
                    # receiver closed as it was reused) is due again 5 s later on the
                    # service's clock, which only the test moves: move it past that retry,
                    # once per such message and well within the claims' lease.
                    page = await api.get(
                        f"/v1/endpoints/{endpoint_id}/messages",
                        params={"status": "pending", "limit": 500},
                    )
                    failed = {m["message_id"] for m in page.json()["items"] if m["attempts"]}
                    if failed - retried:
                        retried.update(failed)
                        clock.advance(timedelta(seconds=6))
                    return await _count(receiver)

                await eventually(received, lambda n: n >= len(changes), timeout=120)

                async def delivered() -> list[dict[str, object]]:
                    page = await api.get(
                        f"/v1/endpoints/{endpoint_id}/messages",
                        params={"status": "delivered", "limit": 500},
                    )
                    items: list[dict[str, object]] = page.json()["items"]
                    return items

                recorded = await eventually(delivered, lambda ms: len(ms) == len(changes))
    finally:
        await database.dispose()
    repeats = [i for i, n in Counter(receiver.ids()).items() if n > 1]
    assert repeats == []
    assert len(receiver.deliveries) == len(changes)
    assert all(d.verified_by == {receiver.secrets[0]} for d in receiver.deliveries)
    assert {m["attempts"] for m in recorded if m["message_id"] not in retried} == {1}
    assert {m["attempts"] for m in recorded if m["message_id"] in retried} <= {2}


async def test_a_claim_left_by_a_dead_process_is_delivered_when_its_lease_ends(
    webhooks: Webhooks,
) -> None:
    with receiving(Receiver()) as receiver:
        endpoint_id = (await webhooks.endpoint(receiver.url))["endpoint_id"]
        # stored due an hour ahead of the service's clock, so the dead process claims first
        later = webhooks.clock() + timedelta(hours=1)
        sessions = webhooks.database.sessions
        await store.record_batch(sessions, [change("ada", 1, Stage.PROSPECT)], [], later)
        lease = timedelta(seconds=webhooks.settings.webhooks_lease_seconds)
        # what a process killed after claiming leaves behind: a lease, no attempt
        dead = await store.claim(sessions, {endpoint_id: 5}, later, later + lease)
        assert len(dead) == 1
        webhooks.clock.advance(timedelta(hours=1) + lease / 2)
        still = await webhooks.messages(endpoint_id)
        assert [(m["status"], m["attempts"]) for m in still] == [("pending", 0)]
        webhooks.clock.advance(lease / 2)

        async def sent() -> list[dict[str, object]]:
            return await webhooks.messages(endpoint_id, status="delivered")

        delivered = await eventually(sent, lambda ms: len(ms) == 1)
    assert receiver.ids() == [dead[0].webhook_id] == [delivered[0]["webhook_id"]]


async def _count(receiver: Receiver) -> int:
    return len(receiver.deliveries)

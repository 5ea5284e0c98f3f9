"""Messages a consumer batch stores, handed to this process's deliverer already leased.

The store side: the messages within the deliverer's room are stored leased (no claim takes
them before the lease ends, and one does after it: a process killed holding them loses
nothing), the others due as before, and a redelivered record hands nothing over again.
The deliverer side: what it accepts is posted, each message once, with no claim.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from services.webhooks import store
from services.webhooks.delivery import Deliverer
from services.webhooks.sealing import SecretBox
from shared.database import Database
from shared.events import Stage
from tests.waiting import eventually
from tests.webhooks.conftest import Webhooks
from tests.webhooks.receivers import Receiver, receiving
from tests.webhooks.records import change

LEASE = timedelta(minutes=5)


async def test_the_room_is_stored_leased_and_the_rest_due(webhooks: Webhooks) -> None:
    endpoint_id = (await webhooks.endpoint("http://127.0.0.1:9/hook"))["endpoint_id"]
    now = webhooks.clock() + timedelta(days=1)  # beyond the service's own deliverer
    handover = store.Handover({endpoint_id: 3}, now + LEASE)
    changes = [change(f"lead-{i}", 1, Stage.PROSPECT) for i in range(5)]

    count = await store.record_batch(
        webhooks.database.sessions, changes, [], now, handover=handover
    )

    assert count == 5
    assert len(handover.taken) == 3
    assert {m.endpoint_id for m in handover.taken} == {endpoint_id}
    assert all(m.attempts == 0 for m in handover.taken)
    due = await store.claim(webhooks.database.sessions, {endpoint_id: 10}, now, now + LEASE)
    assert len(due) == 2  # the leased three are nobody else's until their lease ends
    assert not {m.message_id for m in due} & {m.message_id for m in handover.taken}
    later = now + LEASE
    again = await store.claim(webhooks.database.sessions, {endpoint_id: 10}, later, later + LEASE)
    # a process killed holding them loses nothing: due again with the other two's lease
    assert {m.message_id for m in again} == {m.message_id for m in [*due, *handover.taken]}


async def test_a_redelivered_record_hands_nothing_over_again(webhooks: Webhooks) -> None:
    endpoint_id = (await webhooks.endpoint("http://127.0.0.1:9/hook"))["endpoint_id"]
    now = webhooks.clock() + timedelta(days=1)
    changes = [change("ada", 1, Stage.PROSPECT)]
    first = store.Handover({endpoint_id: 5}, now + LEASE)
    await store.record_batch(webhooks.database.sessions, changes, [], now, handover=first)
    second = store.Handover({endpoint_id: 5}, now + LEASE)
    await store.record_batch(webhooks.database.sessions, changes, [], now, handover=second)

    assert len(first.taken) == 1
    assert second.taken == []
    assert len(await webhooks.messages(endpoint_id)) == 1


async def test_what_the_deliverer_accepts_is_posted_once_without_a_claim(
    webhooks: Webhooks,
) -> None:
    settings = webhooks.settings
    with receiving(Receiver()) as receiver:
        created = await webhooks.endpoint(receiver.url, event_types=["lead.stage_changed"])
        receiver.secrets.append(created["secret"])
        database = Database.connect(settings.webhooks_database_url, sqlite_immediate=True)
        deliverer = Deliverer(
            settings, database, SecretBox(settings.webhooks_secret_key), webhooks.clock
        )
        running = asyncio.create_task(deliverer.run())
        try:
            handover = await eventually(lambda: _ready(deliverer), lambda found: found is not None)
            assert handover is not None
            changes = [change(f"lead-{i}", 1, Stage.PROSPECT) for i in range(4)]
            await store.record_batch(
                database.sessions, changes, [], webhooks.clock(), handover=handover
            )
            assert len(handover.taken) == 4
            deliverer.accept(handover)
            await eventually(lambda: _count(receiver), lambda n: n >= 4)
            delivered = await eventually(
                lambda: webhooks.messages(created["endpoint_id"]),
                lambda items: [m["status"] for m in items] == ["delivered"] * 4,
            )
        finally:
            deliverer.stop()
            await running
            await database.dispose()
    assert sorted(receiver.ids()) == sorted(m.webhook_id for m in handover.taken)
    assert all(d.verified_by for d in receiver.deliveries)
    assert all(m["attempts"] == 1 for m in delivered)  # posted once each


async def _ready(deliverer: Deliverer) -> store.Handover | None:
    return deliverer.handover()


async def _count(receiver: Receiver) -> int:
    return len(receiver.deliveries)

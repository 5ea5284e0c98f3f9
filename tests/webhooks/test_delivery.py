"""Deliveries to real receivers on loopback, verified with the reference library, on a clock
the test moves: the schedule, Retry-After, 410, timeouts, rotation, replay."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from services.webhooks.retry_schedule import ATTEMPTS, DELAYS, JITTER
from shared.events import Stage
from tests.waiting import eventually
from tests.webhooks.conftest import Webhooks
from tests.webhooks.receivers import Receiver, receiving
from tests.webhooks.records import account, change


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def one_message(webhooks: Webhooks, endpoint_id: str, ok: Any) -> dict[str, Any]:
    async def probe() -> list[dict[str, Any]]:
        return await webhooks.messages(endpoint_id)

    found = await eventually(probe, lambda ms: len(ms) == 1 and ok(ms[0]), timeout=20)
    return found[0]


async def test_a_stage_change_arrives_signed_once_and_is_recorded(webhooks: Webhooks) -> None:
    with receiving(Receiver()) as receiver:
        endpoint = await webhooks.endpoint(receiver.url)
        receiver.secrets = [endpoint["secret"]]
        assert await webhooks.publish([change("ada", 1, Stage.PROSPECT)]) == 1
        sent = await one_message(webhooks, endpoint["endpoint_id"], lambda m: m["delivered_at"])
        assert sent["status"] == "delivered"
        assert receiver.ids() == [sent["webhook_id"]]
        delivery = receiver.deliveries[0]
        assert delivery.verified_by == {endpoint["secret"]}
        assert delivery.payload["type"] == "lead.stage_changed"
        assert delivery.payload["data"]["to_stage"] == "prospect"
        detail = await webhooks.api.get(
            f"/v1/endpoints/{endpoint['endpoint_id']}/messages/{sent['message_id']}"
        )
        attempts = detail.json()["attempt_log"]
        assert [(a["outcome"], a["response_code"]) for a in attempts] == [("success", 200)]
        assert detail.json()["payload"] == delivery.payload


async def test_a_receiver_down_is_retried_on_schedule_and_gets_it_when_back(
    webhooks: Webhooks,
) -> None:
    with receiving(Receiver(status=500)) as receiver:
        endpoint = await webhooks.endpoint(receiver.url)
        receiver.secrets = [endpoint["secret"]]
        endpoint_id = endpoint["endpoint_id"]
        await webhooks.publish([change("ada", 1, Stage.PROSPECT)])
        for made in range(1, 4):
            message = await one_message(webhooks, endpoint_id, lambda m, n=made: m["attempts"] == n)
            wait = at(message["next_attempt_at"]) - at(message["last_attempt_at"])
            assert abs(wait / DELAYS[made - 1] - 1) <= JITTER
            assert receiver.refused == [500] * made
            webhooks.clock.advance(wait)
        receiver.status = 200
        delivered = await one_message(webhooks, endpoint_id, lambda m: m["status"] == "delivered")
        assert delivered["attempts"] == 4
        assert len(receiver.deliveries) == 1
        assert receiver.deliveries[0].webhook_id == delivered["webhook_id"]
        assert receiver.deliveries[0].verified_by == {endpoint["secret"]}


async def test_after_the_last_attempt_the_message_is_failed_until_recovered(
    webhooks: Webhooks,
) -> None:
    with receiving(Receiver(status=502)) as receiver:
        endpoint = await webhooks.endpoint(receiver.url)
        endpoint_id = endpoint["endpoint_id"]
        await webhooks.publish([change("ada", 1, Stage.PROSPECT)])
        for made in range(1, ATTEMPTS):
            await one_message(webhooks, endpoint_id, lambda m, n=made: m["attempts"] == n)
            webhooks.clock.advance(DELAYS[made - 1] * 2)
        failed = await one_message(webhooks, endpoint_id, lambda m: m["status"] == "failed")
        assert failed["attempts"] == ATTEMPTS
        assert failed["next_attempt_at"] is None
        assert len(receiver.refused) == ATTEMPTS
        listed = await webhooks.messages(endpoint_id, status="failed")
        assert [m["message_id"] for m in listed] == [failed["message_id"]]
        receiver.status = 204
        recovered = await webhooks.api.post(f"/v1/endpoints/{endpoint_id}/recover")
        assert recovered.json() == {"replayed": 1}
        await one_message(webhooks, endpoint_id, lambda m: m["status"] == "delivered")
        assert receiver.ids() == [failed["webhook_id"]]


async def test_retry_after_is_honoured_on_429_and_503(webhooks: Webhooks) -> None:
    with receiving(Receiver(status=429, headers={"Retry-After": "120"})) as receiver:
        endpoint_id = (await webhooks.endpoint(receiver.url))["endpoint_id"]
        await webhooks.publish([change("ada", 1, Stage.PROSPECT)])
        first = await one_message(webhooks, endpoint_id, lambda m: m["attempts"] == 1)
        assert at(first["next_attempt_at"]) - at(first["last_attempt_at"]) == timedelta(minutes=2)
        receiver.status, receiver.headers = 503, {"Retry-After": "7"}
        webhooks.clock.advance(timedelta(minutes=2))
        second = await one_message(webhooks, endpoint_id, lambda m: m["attempts"] == 2)
        assert at(second["next_attempt_at"]) - at(second["last_attempt_at"]) == timedelta(seconds=7)


async def test_410_gone_disables_the_endpoint(webhooks: Webhooks) -> None:
    with receiving(Receiver(status=410)) as receiver:
        endpoint_id = (await webhooks.endpoint(receiver.url))["endpoint_id"]
        await webhooks.publish([change("ada", 1, Stage.PROSPECT)])
        await one_message(webhooks, endpoint_id, lambda m: m["attempts"] == 1)
        got = (await webhooks.api.get(f"/v1/endpoints/{endpoint_id}")).json()
        assert got["enabled"] is False
        assert "410" in got["disabled_reason"]
        # disabled: new records make no messages for it
        assert await webhooks.publish([change("bob", 1, Stage.PROSPECT)]) == 0
        receiver.status = 200
        enabled = await webhooks.api.post(f"/v1/endpoints/{endpoint_id}/enable")
        assert enabled.json()["enabled"] is True
        webhooks.clock.advance(DELAYS[0] * 2)
        await one_message(webhooks, endpoint_id, lambda m: m["status"] == "delivered")


async def test_a_slow_receiver_times_out_without_slowing_another_endpoint(
    webhooks: Webhooks,
) -> None:
    held = threading.Event()
    with (
        receiving(Receiver(hold=held)) as slow,
        receiving(Receiver()) as fast,
    ):
        slow_id = (await webhooks.endpoint(slow.url, concurrency=1))["endpoint_id"]
        fast_id = (await webhooks.endpoint(fast.url, concurrency=1))["endpoint_id"]
        changes = [change(f"lead-{n}", 1, Stage.PROSPECT) for n in range(20)]
        await webhooks.publish(changes)

        async def fast_delivered() -> int:
            return len(fast.deliveries)

        # twenty in a row, one at a time, while the slow one holds its only slot
        await eventually(fast_delivered, lambda n: n == 20, timeout=20)
        assert slow.deliveries == []

        async def slow_attempts() -> list[dict[str, Any]]:
            messages = await webhooks.messages(slow_id)
            return [m for m in messages if m["attempts"]]

        timed_out = (await eventually(slow_attempts, lambda ms: len(ms) >= 1, timeout=20))[0]
        path = f"/v1/endpoints/{slow_id}/messages/{timed_out['message_id']}"
        log = (await webhooks.api.get(path)).json()["attempt_log"]
        assert log[0]["outcome"] == "timeout"
        assert log[0]["response_code"] is None
        held.set()
        assert {m["status"] for m in await webhooks.messages(fast_id)} == {"delivered"}


async def test_rotation_signs_with_both_secrets_during_the_overlap_then_the_new_only(
    webhooks: Webhooks,
) -> None:
    with receiving(Receiver()) as receiver:
        endpoint = await webhooks.endpoint(receiver.url)
        endpoint_id, old = endpoint["endpoint_id"], endpoint["secret"]
        rotated = (await webhooks.api.post(f"/v1/endpoints/{endpoint_id}/rotate-secret")).json()
        new = rotated["secret"]
        assert new != old
        assert "secret" not in (await webhooks.api.get(f"/v1/endpoints/{endpoint_id}")).json()
        receiver.secrets = [old, new]

        async def received() -> int:
            return len(receiver.deliveries)

        await webhooks.publish([change("ada", 1, Stage.PROSPECT)])
        await eventually(received, lambda n: n == 1)
        assert receiver.deliveries[0].verified_by == {old, new}
        assert receiver.deliveries[0].signatures == 2

        webhooks.clock.advance(timedelta(hours=24, seconds=1))
        await webhooks.publish([change("bob", 1, Stage.PROSPECT)])
        await eventually(received, lambda n: n == 2)
        assert receiver.deliveries[1].verified_by == {new}
        assert receiver.deliveries[1].signatures == 1


async def test_replay_sends_again_under_the_same_webhook_id(webhooks: Webhooks) -> None:
    with receiving(Receiver()) as receiver:
        endpoint_id = (await webhooks.endpoint(receiver.url))["endpoint_id"]
        start = webhooks.clock()
        await webhooks.publish([change("ada", 1, Stage.PROSPECT)])
        webhooks.clock.advance(timedelta(minutes=1))
        await webhooks.publish([change("bob", 1, Stage.PROSPECT)])

        async def received() -> list[str]:
            return receiver.ids()

        first = await eventually(received, lambda ids: len(ids) == 2)
        one = (await webhooks.messages(endpoint_id))[0]
        replayed = await webhooks.api.post(
            f"/v1/endpoints/{endpoint_id}/messages/{one['message_id']}/replay"
        )
        assert replayed.json() == {"replayed": 1}
        await eventually(received, lambda ids: len(ids) == 3)
        assert receiver.ids()[2] == one["webhook_id"] == first[0]
        since = (start + timedelta(seconds=30)).isoformat()
        again = await webhooks.api.post(
            f"/v1/endpoints/{endpoint_id}/replay", json={"since": since}
        )
        assert again.json() == {"replayed": 1}
        await eventually(received, lambda ids: len(ids) == 4)
        assert receiver.ids()[3] == first[1]


async def test_a_ping_is_signed_and_reported(webhooks: Webhooks) -> None:
    with receiving(Receiver()) as receiver:
        endpoint = await webhooks.endpoint(receiver.url)
        receiver.secrets = [endpoint["secret"]]
        ping = await webhooks.api.post(f"/v1/endpoints/{endpoint['endpoint_id']}/test")
        assert ping.status_code == 200
        assert (ping.json()["outcome"], ping.json()["response_code"]) == ("success", 200)
        assert receiver.deliveries[0].payload["type"] == "webhook.test"
        assert receiver.deliveries[0].verified_by == {endpoint["secret"]}


async def test_a_redirect_is_a_failure_and_is_not_followed(webhooks: Webhooks) -> None:
    with (
        receiving(Receiver()) as target,
        receiving(Receiver(status=307)) as redirecting,
    ):
        redirecting.headers = {"Location": target.url}
        endpoint_id = (await webhooks.endpoint(redirecting.url))["endpoint_id"]
        await webhooks.publish([change("ada", 1, Stage.PROSPECT)])
        message = await one_message(webhooks, endpoint_id, lambda m: m["attempts"] == 1)
        path = f"/v1/endpoints/{endpoint_id}/messages/{message['message_id']}"
        [attempt] = (await webhooks.api.get(path)).json()["attempt_log"]
        assert (attempt["outcome"], attempt["response_code"]) == ("failure", 307)
        assert message["status"] == "pending"
        assert target.deliveries == []


async def test_an_endpoints_rate_limit_holds_its_messages_back_and_no_one_elses(
    webhooks: Webhooks,
) -> None:
    with receiving(Receiver()) as limited, receiving(Receiver()) as free:
        limited_id = (await webhooks.endpoint(limited.url, rate_limit=0.001))["endpoint_id"]
        await webhooks.publish([change(f"lead-{n}", 1, Stage.PROSPECT) for n in range(3)])

        async def received() -> int:
            return len(limited.deliveries)

        await eventually(received, lambda n: n == 1)
        # another endpoint's message, stored after, goes out: the loop has looked again
        await webhooks.endpoint(free.url)
        await webhooks.publish([change("late", 1, Stage.PROSPECT)])

        async def free_received() -> int:
            return len(free.deliveries)

        await eventually(free_received, lambda n: n == 1)
        waiting = await webhooks.messages(limited_id, status="pending")
        assert [m["attempts"] for m in waiting] == [0, 0, 0]  # two of the three, and late
        assert len(limited.deliveries) == 1


async def test_account_scores_arrive_once_past_their_filters_and_a_record_read_again_is_no_message(
    webhooks: Webhooks,
) -> None:
    with receiving(Receiver()) as receiver:
        fields = {"filters": {"account_score_min_delta": 20}}
        endpoint = await webhooks.endpoint(
            receiver.url, event_types=["account.score_changed"], **fields
        )
        receiver.secrets = [endpoint["secret"]]
        first = [account("initech", 1, 30), account("initech", 2, 40, 30)]
        assert await webhooks.publish(accounts=first) == 1  # 40 is 10 from the 30 sent
        # read again after a crash, with the next one: only the next is new
        assert await webhooks.publish(accounts=[*first, account("initech", 3, 55, 40)]) == 1
        assert await webhooks.publish(accounts=[account("initech", 2, 40, 30)]) == 0
        messages = await eventually(
            lambda: webhooks.messages(endpoint["endpoint_id"]),
            lambda ms: len(ms) == 2 and all(m["delivered_at"] for m in ms),
            timeout=20,
        )
    assert sorted(receiver.ids()) == sorted(m["webhook_id"] for m in messages)
    assert all(d.verified_by == {endpoint["secret"]} for d in receiver.deliveries)
    sent = sorted(
        (d.payload["data"]["sequence"], d.payload["data"]["total"]) for d in receiver.deliveries
    )
    assert sent == [(1, 30), (3, 55)]
    assert {m["event_type"] for m in messages} == {"account.score_changed"}

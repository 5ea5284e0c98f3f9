"""Account scores through ingest and scoring on the real broker, out as webhooks.

Every account update the account stage publishes reaches the endpoint subscribed to
``account.score_changed`` exactly once by webhook-id (verified with the reference
Standard Webhooks library), in sequence order per account with nothing missing; the
threshold endpoint gets only the crossing. The service restarted in a fresh consumer
group reads every account record again and makes no second message of any.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from services.webhooks.app import create_app as create_webhooks
from shared.settings import LeadflowSettings
from tests.servers import serving
from tests.waiting import eventually
from tests.webhooks.conftest import webhooks_settings
from tests.webhooks.receivers import ManualClock, Receiver, receiving

pytestmark = pytest.mark.integration

QUALIFIED = {"industry": "saas", "employees": 200, "budget_usd": 20000, "job_level": "vp"}
DAY = "2026-11-20T10:00:00Z"
BIG = 130.0
ACCOUNT_EVENTS = {"event_types": ["account.score_changed"]}


def event(n: int, kind: str, lead: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"{lead}/{n}", "type": kind, "lead_id": lead, "occurred_at": DAY, **fields}


def by_account(receiver: Receiver) -> dict[str, list[dict[str, Any]]]:
    """Each account's deliveries' data, in sequence order."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for delivery in receiver.deliveries:
        data = delivery.payload["data"]
        found[data["account_id"]].append(data)
    return {a: sorted(items, key=lambda d: d["sequence"]) for a, items in found.items()}


def settled(receiver: Receiver, totals: dict[str, float]) -> bool:
    """Every update of each account arrived (sequences 1..n) and the last has its total."""
    accounts = by_account(receiver)
    for account_id, total in totals.items():
        items = accounts.get(account_id, [])
        sequences = [d["sequence"] for d in items]
        if not items or sequences != list(range(1, len(items) + 1)) or items[-1]["total"] != total:
            return False
    return True


@pytest.mark.parametrize("webhooks_database", ["sqlite"], indirect=True)
async def test_every_account_update_arrives_once_and_a_re_read_makes_no_second_message(
    kafka_settings: LeadflowSettings, webhooks_database: str
) -> None:
    ada, bob, cyd = "ada@acme.com", "bob@acme.com", "cyd@initech.com"
    initech = {"name": "Initech", "industry": "saas", "employees": 500}
    pricing = {"path": "/pricing"}
    batch = [
        event(0, "lead.updated", ada, traits={**QUALIFIED, "company_domain": "acme.com"}),
        event(1, "form.submitted", ada),
        event(2, "webinar.attended", ada),
        *(event(3 + i, "page.viewed", ada, properties=pricing) for i in range(4)),
        event(0, "lead.updated", bob, traits={"company_domain": "acme.com"}),
        event(1, "email.opened", bob),
        event(0, "lead.updated", cyd, traits=QUALIFIED),
        event(1, "demo.requested", cyd),
        event(2, "segment.group", cyd, properties={"group_id": "initech", "traits": initech}),
    ]
    move = event(2, "segment.group", bob, properties={"group_id": "initech"})
    common = kafka_settings.model_dump()
    first = webhooks_settings(webhooks_database, **common, webhooks_consume=True)
    again = first.model_copy(update={"webhooks_group": f"webhooks-{uuid.uuid4().hex[:8]}"})
    async with AsyncExitStack() as stack:
        every = stack.enter_context(receiving(Receiver()))
        big = stack.enter_context(receiving(Receiver()))
        ingest_url = stack.enter_context(serving(create_ingest(IngestSettings(**common))))
        stack.enter_context(serving(create_scoring(ScoringSettings(**common))))
        ingest = await stack.enter_async_context(httpx.AsyncClient(base_url=ingest_url))
        with serving(create_webhooks(first, ManualClock())) as webhooks_url:
            async with httpx.AsyncClient(base_url=webhooks_url, timeout=30) as api:
                endpoint_ids = {}
                for receiver, fields in (
                    (every, ACCOUNT_EVENTS),
                    (big, {**ACCOUNT_EVENTS, "filters": {"account_score_thresholds": [BIG]}}),
                ):
                    created = await api.post("/v1/endpoints", json={"url": receiver.url, **fields})
                    assert created.status_code == 201, created.text
                    receiver.secrets = [created.json()["secret"]]
                    endpoint_ids[id(receiver)] = created.json()["endpoint_id"]
                assert (await ingest.post("/v1/events/batch", json=batch)).status_code == 202

                async def progress() -> Receiver:
                    return every

                await eventually(
                    progress, lambda r: settled(r, {"acme.com": 116, "initech": 145}), timeout=90
                )

        # the same database, a consumer group that has read nothing: every record again
        with serving(create_webhooks(again, ManualClock())) as webhooks_url:
            assert (await ingest.post("/v1/events", json=move)).status_code == 202
            await eventually(
                progress, lambda r: settled(r, {"acme.com": 115, "initech": 146}), timeout=90
            )
            async with httpx.AsyncClient(base_url=webhooks_url, timeout=30) as api:
                listed = await api.get(
                    f"/v1/endpoints/{endpoint_ids[id(every)]}/messages", params={"limit": 1000}
                )
                stored = listed.json()["items"]

    for receiver in (every, big):
        assert receiver.deliveries
        assert all(d.verified_by == frozenset(receiver.secrets) for d in receiver.deliveries)
        assert Counter(receiver.ids()).most_common(1)[0][1] == 1  # no id twice
        assert {d.payload["type"] for d in receiver.deliveries} == {"account.score_changed"}
    # one message per account update, the re-read ones included: none was made again
    assert sorted(m["webhook_id"] for m in stored) == sorted(every.ids())
    assert {m["lead_id"] for m in stored} == {None}
    last = {a: items[-1] for a, items in by_account(every).items()}
    assert (last["initech"]["contacts"], last["initech"]["fit"]) == (2, 40)
    assert last["initech"]["traits"]["name"] == "Initech"
    assert last["acme.com"]["delta"] == -1  # bob's point went with him
    # initech crossed 130 once, on its way up; acme.com never reached it
    [crossing] = [d.payload["data"] for d in big.deliveries]
    assert crossing["account_id"] == "initech"
    assert crossing["total"] >= BIG > (crossing["previous_total"] or 0)

"""The import's HTTP edge: what it does with each answer of ingest and the pipeline.

The answers are scripted (httpx's mock transport): the real services answer them in
tests/shared/test_backfill_system.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import orjson
import pytest

from shared.backfill.client import HttpIngest, HttpLeadFacts
from shared.backfill.plan import LeadFacts
from shared.backfill.run import ImportStopped
from shared.events import EventIn

Answer = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return waits


def events(count: int) -> list[EventIn]:
    return [
        EventIn(
            event_id=f"e{n}",
            type="email.opened",
            lead_id="ada@example.com",
            occurred_at="2026-01-05T10:00:00Z",
        )
        for n in range(count)
    ]


def scripted(*answers: Answer) -> tuple[httpx.AsyncClient, list[list[str]]]:
    """A client whose requests get ``answers`` in turn; the event ids each POST carried."""
    posted: list[list[str]] = []
    pending = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posted.append([item["event_id"] for item in orjson.loads(request.content)])
        return pending.pop(0)(request) if len(pending) > 1 else pending[0](request)

    transport = httpx.MockTransport(handle)
    return httpx.AsyncClient(transport=transport, base_url="http://ingest.test"), posted


def status(code: int, body: object = None, **headers: str) -> Answer:
    return lambda _: httpx.Response(code, json=body or {"detail": "x"}, headers=headers)


def accept(request: httpx.Request) -> httpx.Response:
    ids = [item["event_id"] for item in orjson.loads(request.content)]
    return httpx.Response(202, json={"accepted": len(ids), "event_ids": ids})


async def test_a_429_or_503_is_retried_after_the_wait_it_asks_for(no_waiting: list[float]) -> None:
    http, posted = scripted(status(503, **{"Retry-After": "5"}), status(429), accept)
    delivery = await HttpIngest(http).send(events(2))
    assert delivery.rejected == []
    assert posted == [["e0", "e1"]] * 3  # the same ids each time: scoring counts them once
    assert no_waiting == [5.0, 0.4]


async def test_a_connection_that_keeps_failing_stops_the_import() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    http, _ = scripted(refuse)
    with pytest.raises(ImportStopped, match="failed 3 times, last: cannot connect"):
        await HttpIngest(http, attempts=3).send(events(1))


async def test_the_items_a_422_names_are_rejected_and_the_others_posted_again() -> None:
    detail = [
        {"loc": ["body", 1, "type"], "msg": "crm:write needed", "type": "forbidden"},
        {"loc": ["body", 1, "properties"], "msg": "too big", "type": "value_error"},
    ]
    http, posted = scripted(status(422, {"detail": detail}), accept)
    delivery = await HttpIngest(http).send(events(3))
    assert posted == [["e0", "e1", "e2"], ["e0", "e2"]]
    assert [(r.event.event_id, r.reason) for r in delivery.rejected] == [
        ("e1", "type: crm:write needed; properties: too big")
    ]


async def test_a_batch_over_the_body_limit_is_posted_in_halves() -> None:
    def limit(request: httpx.Request) -> httpx.Response:
        if len(orjson.loads(request.content)) > 1:
            return httpx.Response(413, json={"detail": "too large"})
        return accept(request)

    http, posted = scripted(limit)
    delivery = await HttpIngest(http).send(events(3))
    assert delivery.rejected == []
    assert posted == [["e0", "e1", "e2"], ["e0"], ["e1", "e2"], ["e1"], ["e2"]]


@pytest.mark.parametrize(
    ("code", "advice"),
    [(401, "give a valid key with --api-key"), (403, "the import needs events:write")],
)
async def test_a_refused_key_stops_the_import_with_advice(code: int, advice: str) -> None:
    http, _ = scripted(status(code))
    with pytest.raises(ImportStopped, match=advice):
        await HttpIngest(http).send(events(1))


async def test_lead_facts_come_from_the_pipeline_leads_it_does_not_know_are_left_out() -> None:
    asked: list[str] = []

    def leads(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/funnel":  # many leads: looking up three is cheaper
            return httpx.Response(200, json={"total_leads": 50_000})
        asked.append(request.url.raw_path.decode())
        if "ada" in request.url.path:
            return httpx.Response(200, json={"lead_id": "ada", "as_of": "2026-01-05T10:00:00Z"})
        if "new" in request.url.path:
            return httpx.Response(200, json={"lead_id": "new", "as_of": None})
        return httpx.Response(404, json={"detail": "lead is unknown"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(leads), base_url="http://p.test")
    found = await HttpLeadFacts(http).facts(["ada@example.com", "x/y z", "new"])
    assert found == {
        "ada@example.com": LeadFacts(datetime(2026, 1, 5, 10, tzinfo=UTC)),
        "new": LeadFacts(None),
    }
    assert sorted(asked) == ["/v1/leads/ada@example.com", "/v1/leads/new", "/v1/leads/x%2Fy%20z"]


async def test_beside_few_leads_the_listing_is_read_instead() -> None:
    wanted = [f"lead{n}@example.com" for n in range(40)]
    asked: list[str] = []

    def pipeline(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url.copy_with(scheme="http", host="p.test")))
        if request.url.path == "/v1/funnel":
            return httpx.Response(200, json={"total_leads": 3})
        cursor = request.url.params["updated_after"]
        items = {
            "0": [
                {"lead_id": "lead7@example.com", "as_of": "2026-01-05T10:00:00Z"},
                {"lead_id": "someone@example.com", "as_of": "2026-01-05T10:00:00Z"},
            ],
            "c1": [{"lead_id": "lead9@example.com", "as_of": "2026-02-05T10:00:00Z"}],
        }.get(cursor, [])
        next_cursor = {"0": "c1", "c1": "c2"}.get(cursor, cursor)
        return httpx.Response(200, json={"items": items, "next_cursor": next_cursor})

    http = httpx.AsyncClient(transport=httpx.MockTransport(pipeline), base_url="http://p.test")
    found = await HttpLeadFacts(http).facts(wanted)
    assert found == {
        "lead7@example.com": LeadFacts(datetime(2026, 1, 5, 10, tzinfo=UTC)),
        "lead9@example.com": LeadFacts(datetime(2026, 2, 5, 10, tzinfo=UTC)),
    }
    assert asked == [
        "http://p.test/v1/funnel",
        "http://p.test/v1/leads?updated_after=0&limit=1000",
        "http://p.test/v1/leads?updated_after=c1&limit=1000",
        "http://p.test/v1/leads?updated_after=c2&limit=1000",
    ]


async def test_a_merged_visitor_missing_from_the_listing_is_looked_up_by_its_id() -> None:
    wanted = [f"lead{n}@example.com" for n in range(40)] + ["anon:v1", "anon:v2"]
    looked_up: list[str] = []

    def pipeline(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/funnel":
            return httpx.Response(200, json={"total_leads": 3})
        if request.url.path == "/v1/leads":  # lists the known lead, never its alias
            first = request.url.params["updated_after"] == "0"
            known = {"lead_id": "ada@example.com", "as_of": "2026-01-05T10:00:00Z"}
            return httpx.Response(200, json={"items": [known] if first else [], "next_cursor": "c"})
        looked_up.append(request.url.path)
        if request.url.path == "/v1/leads/anon:v1":  # an alias answers its lead
            lead = {"lead_id": "ada@example.com", "as_of": "2026-01-05T10:00:00Z"}
            return httpx.Response(200, json={**lead, "requested_alias": "anon:v1"})
        return httpx.Response(404, json={"detail": "lead is unknown"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(pipeline), base_url="http://p.test")
    found = await HttpLeadFacts(http).facts(wanted)
    assert found == {"anon:v1": LeadFacts(datetime(2026, 1, 5, 10, tzinfo=UTC))}
    assert sorted(looked_up) == ["/v1/leads/anon:v1", "/v1/leads/anon:v2"]  # not the 40


async def test_an_empty_system_is_asked_nothing_but_its_size() -> None:
    asked: list[str] = []

    def pipeline(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(200, json={"total_leads": 0})

    http = httpx.AsyncClient(transport=httpx.MockTransport(pipeline), base_url="http://p.test")
    assert await HttpLeadFacts(http).facts(["ada@example.com"]) == {}
    assert asked == ["/v1/funnel"]


async def test_a_pipeline_key_without_leads_read_stops_before_anything_is_sent() -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(status(403)), base_url="http://p.test")
    with pytest.raises(ImportStopped, match="needs leads:read on the pipeline"):
        await HttpLeadFacts(http).facts(["ada@example.com"])

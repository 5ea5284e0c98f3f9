"""The whole system through HTTP only: events into ingest, stages and scores out of pipeline.

Three real servers on loopback (ingest, scoring with its worker, pipeline
with its consumer), the real broker, and each database kind: what a
marketing platform posts must show up in the REST API with the exact
numbers of the default model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.pipeline.app import create_app as create_pipeline
from services.pipeline.settings import PipelineSettings
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.settings import LeadflowSettings
from tests.pipeline.conftest import ScratchDatabases
from tests.servers import serving
from tests.waiting import eventually

pytestmark = pytest.mark.integration

QUALIFIED = {"industry": "saas", "employees": 200, "budget_usd": 20000, "job_level": "vp"}
DAY = "2026-11-20T10:00:00Z"


@dataclass
class System:
    ingest: httpx.AsyncClient
    pipeline: httpx.AsyncClient


@pytest.fixture
async def system(
    kafka_settings: LeadflowSettings, scratch_databases: ScratchDatabases
) -> AsyncIterator[System]:
    """ingest, scoring and pipeline on one broker namespace and a fresh database."""
    common = kafka_settings.model_dump()
    database_url = await scratch_databases.create()
    with ExitStack() as servers:
        ingest_url = servers.enter_context(serving(create_ingest(IngestSettings(**common))))
        servers.enter_context(serving(create_scoring(ScoringSettings(**common))))
        pipeline_settings = PipelineSettings(**common, database_url=database_url)
        pipeline_url = servers.enter_context(serving(create_pipeline(pipeline_settings)))
        async with (
            httpx.AsyncClient(base_url=ingest_url, timeout=30) as ingest,
            httpx.AsyncClient(base_url=pipeline_url, timeout=30) as pipeline,
        ):
            yield System(ingest, pipeline)


def event(n: int, kind: str, lead: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"{lead}/{n}", "type": kind, "lead_id": lead, "occurred_at": DAY, **fields}


async def lead_when(system: System, lead: str, ok: Any) -> dict[str, Any]:
    async def fetch() -> httpx.Response:
        # valued at the events' time: as scored, before decay (test_lead_reads.py decays)
        return await system.pipeline.get(f"/v1/leads/{lead}", params={"as_of": DAY})

    response = await eventually(
        fetch, lambda r: r.status_code == 200 and ok(r.json()), timeout=60, interval=0.2
    )
    body: dict[str, Any] = response.json()
    return body


async def test_stages_and_exact_scores_flow_from_ingest_to_the_rest_api(system: System) -> None:
    ada, bob, cyd = "ada@example.com", "bob@example.com", "cyd@example.com"
    pricing = {"path": "/pricing"}
    batch = [
        event(0, "lead.updated", ada, traits=QUALIFIED),
        event(1, "form.submitted", ada),
        event(2, "webinar.attended", ada),
        *(event(3 + i, "page.viewed", ada, properties=pricing) for i in range(4)),
        event(0, "lead.updated", bob, traits={"industry": "retail", "employees": 5}),
        event(1, "email.opened", bob),
        event(0, "lead.updated", cyd, traits=QUALIFIED),
        event(1, "demo.requested", cyd),
    ]
    accepted = await system.ingest.post("/v1/events/batch", json=batch)
    assert accepted.status_code == 202
    # a platform retrying part of the batch changes nothing
    retried = await system.ingest.post("/v1/events/batch", json=batch[:3])
    assert retried.status_code == 202

    got = await lead_when(system, ada, lambda lead: lead["stage"] == "opportunity")
    assert (got["fit"], got["engagement"], got["total"]) == (75, 40, 115)
    assert got["model_version"] == "default-1"
    await lead_when(system, bob, lambda lead: lead["engagement"] == 1)
    await lead_when(system, cyd, lambda lead: lead["stage"] == "opportunity")

    history = (await system.pipeline.get(f"/v1/leads/{ada}/history")).json()["items"]
    assert [(c["sequence"], c["from_stage"], c["to_stage"]) for c in history] == [
        (1, None, "prospect"),
        (2, "prospect", "opportunity"),
    ]
    assert history[1]["trigger_event_id"] == f"{ada}/5"  # the third pricing view

    score = (await system.pipeline.get(f"/v1/leads/{ada}/score")).json()
    assert score["sequence"] == 7  # seven distinct events, the retried three counted once
    assert sum(r["points"] for r in score["breakdown"] if r["axis"] == "fit") == 75
    assert sum(r["points"] for r in score["breakdown"] if r["axis"] == "engagement") == 40

    funnel = (await system.pipeline.get("/v1/funnel")).json()
    current = {s["stage"]: s["current"] for s in funnel["stages"]}
    assert funnel["total_leads"] == 3
    assert (current["lead"], current["prospect"], current["opportunity"]) == (1, 0, 2)

    feed = (await system.pipeline.get("/v1/stage-changes", params={"limit": 100})).json()
    ids = [c["change_id"] for c in feed["items"]]
    assert len(ids) == len(set(ids)) == 2 + 1 + 2  # ada twice, bob once, cyd twice

    valued: dict[str, str | int] = {"min_score": 100, "as_of": DAY}
    listing = (await system.pipeline.get("/v1/leads", params=valued)).json()
    assert [lead["lead_id"] for lead in listing["items"]] == [ada, cyd]  # 115, then 75 + 30


async def account_when(system: System, account_id: str, ok: Any) -> dict[str, Any]:
    async def fetch() -> httpx.Response:
        return await system.pipeline.get(f"/v1/accounts/{account_id}")

    response = await eventually(
        fetch, lambda r: r.status_code == 200 and ok(r.json()), timeout=60, interval=0.2
    )
    body: dict[str, Any] = response.json()
    return body


def contacts(account: dict[str, Any]) -> list[tuple[str, str, float]]:
    return [(m["lead_id"], m["stage"], m["total"]) for m in account["members"]]


async def test_accounts_roll_up_their_contacts_and_follow_a_reassignment(system: System) -> None:
    ada, bob, cyd = "ada@acme.com", "bob@acme.com", "cyd@initech.com"
    initech = {"name": "Initech", "industry": "saas", "employees": 500}
    pricing = {"path": "/pricing"}
    batch = [
        # a company-domain trait, spelled two ways, puts ada and bob in acme.com
        event(0, "lead.updated", ada, traits={**QUALIFIED, "company_domain": "acme.com"}),
        event(1, "form.submitted", ada),
        event(2, "webinar.attended", ada),
        *(event(3 + i, "page.viewed", ada, properties=pricing) for i in range(4)),
        event(0, "lead.updated", bob, traits={"company_domain": "https://www.Acme.com/"}),
        event(1, "email.opened", bob),
        # a group call puts cyd in initech and gives the account its traits
        event(0, "lead.updated", cyd, traits=QUALIFIED),
        event(1, "demo.requested", cyd),
        event(2, "segment.group", cyd, properties={"group_id": "initech", "traits": initech}),
    ]
    assert (await system.ingest.post("/v1/events/batch", json=batch)).status_code == 202

    both = [(ada, "opportunity", 115.0), (bob, "lead", 1.0)]
    acme = await account_when(system, "acme.com", lambda a: contacts(a) == both)
    assert acme["contacts"] == 2
    assert (acme["contact_total_sum"], acme["contact_total_max"]) == (116, 115)
    assert (acme["engaged_contacts"], acme["fit"], acme["total"]) == (1, 0, 116)
    alone = [(cyd, "opportunity", 105.0)]
    group = await account_when(system, "initech", lambda a: contacts(a) == alone)
    assert (group["name"], group["fit"], group["total"]) == ("Initech", 40, 145)
    assert [r["rule"].split(":")[0] for r in group["breakdown"]] == [
        "account-industry",
        "account-size",
    ]

    # bob's group call beats his domain trait: he moves to initech, and leaves acme.com
    move = event(2, "segment.group", bob, properties={"group_id": "initech"})
    assert (await system.ingest.post("/v1/events", json=move)).status_code == 202
    moved = [(cyd, "opportunity", 105.0), (bob, "lead", 1.0)]
    group = await account_when(system, "initech", lambda a: contacts(a) == moved)
    assert (group["contacts"], group["contact_total_sum"], group["total"]) == (2, 106, 146)
    acme = await account_when(system, "acme.com", lambda a: a["contacts"] == 1)
    assert contacts(acme) == [(ada, "opportunity", 115.0)]
    assert (acme["total"], acme["contact_total_max"]) == (115, 115)

    listing = (await system.pipeline.get("/v1/accounts")).json()
    assert [(a["account_id"], a["total"]) for a in listing["items"]] == [
        ("initech", 146),
        ("acme.com", 115),
    ]
    changed = (await system.pipeline.get("/v1/accounts", params={"updated_after": "0"})).json()
    assert {a["account_id"] for a in changed["items"]} == {"acme.com", "initech"}


async def test_a_merged_visitor_is_found_as_the_known_lead(system: System) -> None:
    """identity.merge through ingest and scoring: the pipeline records the alias, the
    visitor's row goes, and its later events (forwarded by scoring) do not bring it back."""
    ada, visitor = "ada@example.com", "anon:v-19"
    pricing = {"path": "/pricing"}
    before = [
        *(event(i, "page.viewed", visitor, properties=pricing) for i in range(2)),
        event(0, "lead.updated", ada, traits=QUALIFIED),
        event(1, "form.submitted", ada),
    ]
    assert (await system.ingest.post("/v1/events/batch", json=before)).status_code == 202
    seen = await lead_when(system, visitor, lambda lead: lead["engagement"] > 0)
    known = await lead_when(system, ada, lambda lead: lead["engagement"] > 0)

    merge = event(9, "identity.merge", visitor, properties={"into": ada})
    assert (await system.ingest.post("/v1/events", json=merge)).status_code == 202
    merged = await lead_when(system, visitor, lambda lead: lead["lead_id"] == ada)

    assert merged["requested_alias"] == visitor
    assert merged["fit"] == known["fit"]
    assert merged["engagement"] == known["engagement"] + seen["engagement"]
    history = (await system.pipeline.get(f"/v1/leads/{visitor}/history")).json()
    assert (history["lead_id"], history["requested_alias"]) == (ada, visitor)
    assert [(m["merged_from"], m["merge_id"]) for m in history["merges"]] == [
        (visitor, f"{visitor}/9")
    ]

    later = event(10, "page.viewed", visitor, properties=pricing)
    assert (await system.ingest.post("/v1/events", json=later)).status_code == 202
    grown = await lead_when(system, ada, lambda lead: lead["engagement"] > merged["engagement"])
    assert grown["requested_alias"] is None
    listing = (await system.pipeline.get("/v1/leads", params={"updated_after": "0"})).json()
    assert [lead["lead_id"] for lead in listing["items"]] == [ada]
    assert (await system.pipeline.get("/v1/funnel")).json()["total_leads"] == 1
    again = (await system.pipeline.get(f"/v1/leads/{visitor}")).json()
    assert (again["lead_id"], again["requested_alias"]) == (ada, visitor)

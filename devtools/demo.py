"""``leadflow demo``: a synthetic stream through ingest, then the funnel from pipeline.

It talks to the running services over HTTP only, like a marketing platform
and an ops dashboard would, so what it shows is what they would see. With a key
(``--api-key``) it sends it as a bearer token to both; a refused key, a service that
is not there or one that never catches up ends the demo with one line that says so.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from devtools.synthetic import synthetic_stream

BATCH = 500

SCOPES = "events:write and crm:write on ingest, leads:read on pipeline"
"""What the demo's key needs: it posts deals and stage changes, and reads every lead."""


class DemoFailed(Exception):
    """The demo cannot go on; the message is the one line to show."""


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def explain(error: httpx.HTTPError) -> str:
    """One line for a person: which service, what it answered, what to do about it."""
    request = error.request
    where = f"{request.method} {request.url}"
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        answer = f"{where} answered {status} {error.response.reason_phrase}"
        if status == 401:
            return f"{answer}: give a valid key with --api-key or LEADFLOW_DEMO_API_KEY"
        if status == 403:
            return f"{answer}: the key lacks a scope; the demo needs {SCOPES}"
        return answer
    if isinstance(error, httpx.ConnectError):
        return f"cannot reach {where}: is the system running (`make run`)?"
    return f"{where} failed: {type(error).__name__}: {error}"


async def _refused(response: httpx.Response) -> None:
    """Every response: 401 and 403 stop the demo at once (no waiting on a refused key)."""
    if response.status_code in (401, 403):
        await response.aread()
        response.raise_for_status()


def client(base_url: str, api_key: str | None, timeout: float) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=timeout,
        headers=headers,
        event_hooks={"response": [_refused]},
    )


async def post_stream(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), BATCH):
        batch = events[start : start + BATCH]
        for _attempt in range(10):  # 503 means "retry with the same event ids"
            response = await client.post("/v1/events/batch", json=batch)
            if response.status_code != 503:
                break
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        response.raise_for_status()


async def wait_until_scored(
    client: httpx.AsyncClient, expected: Counter[str], timeout: float
) -> None:
    """Until pipeline's score of every lead includes all of the lead's events."""
    pending = dict(expected)
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} leads not fully scored after {timeout}s")
        for lead_id, count in list(pending.items()):
            response = await client.get(f"/v1/leads/{quote(lead_id, safe='@')}/score")
            if response.status_code == 200 and response.json()["sequence"] >= count:
                del pending[lead_id]
        if pending:
            await asyncio.sleep(0.5)


def show_funnel(funnel: dict[str, Any]) -> None:
    out(f"Funnel ({funnel['total_leads']} leads)")
    out(f"  {'stage':<13}{'now':>7}{'reached':>9}")
    for stage in funnel["stages"]:
        out(f"  {stage['stage']:<13}{stage['current']:>7}{stage['reached']:>9}")
    for conversion in funnel["conversions"]:
        rate = conversion["rate"]
        shown = "-" if rate is None else f"{rate:.0%}"
        out(f"  {conversion['from_stage']:>11} -> {conversion['to_stage']:<12}{shown:>6}")


def show_leads(leads: list[dict[str, Any]]) -> None:
    out("Top leads")
    out(f"  {'lead':<40}{'stage':<13}{'fit':>6}{'engagement':>12}{'total':>8}")
    for lead in leads:
        out(
            f"  {lead['lead_id']:<40}{lead['stage']:<13}{lead['fit']:>6.0f}"
            f"{lead['engagement']:>12.1f}{lead['total']:>8.1f}"
        )


async def run_demo(
    ingest_url: str, pipeline_url: str, leads: int, seed: int, api_key: str | None = None
) -> None:
    """The demo; raises :class:`DemoFailed` with one line when it cannot go on."""
    try:
        await _demo(ingest_url, pipeline_url, leads, seed, api_key)
    except httpx.HTTPError as exc:
        raise DemoFailed(explain(exc)) from None
    except TimeoutError as exc:
        raise DemoFailed(str(exc)) from None


async def _demo(
    ingest_url: str, pipeline_url: str, leads: int, seed: int, api_key: str | None
) -> None:
    run_id = "demo-" + datetime.now(UTC).strftime("%H%M%S")
    events = list(synthetic_stream(leads=leads, seed=seed, run_id=run_id))
    per_lead = Counter(e["lead_id"] for e in events)
    out(f"Posting {len(events)} events for {leads} leads over 6 simulated weeks to {ingest_url}")
    async with (
        client(ingest_url, api_key, timeout=60) as ingest,
        client(pipeline_url, api_key, timeout=30) as pipeline,
    ):
        started = time.monotonic()
        await post_stream(ingest, events)
        posted = time.monotonic()
        out(f"  accepted in {posted - started:.1f}s; waiting for pipeline to show every score")
        await wait_until_scored(pipeline, per_lead, timeout=300)
        out(f"  all visible in pipeline {time.monotonic() - posted:.1f}s after the last POST")
        out()
        show_funnel((await pipeline.get("/v1/funnel")).raise_for_status().json())
        out()
        top = (await pipeline.get("/v1/leads", params={"limit": 10})).raise_for_status().json()
        show_leads(top["items"])
        out()
        await show_one_stage_change(ingest, pipeline)
        out()
        out(f"Dashboard: {pipeline_url.rstrip('/')}/dashboard")


async def show_one_stage_change(ingest: httpx.AsyncClient, pipeline: httpx.AsyncClient) -> None:
    """One prospect requests a demo: how long until the REST API shows it as an opportunity."""
    prospects = (await pipeline.get("/v1/leads", params={"stage": "prospect", "limit": 1})).json()
    if not prospects["items"]:
        return
    lead_id = prospects["items"][0]["lead_id"]
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    event = {"type": "demo.requested", "lead_id": lead_id, "occurred_at": now}
    (await ingest.post("/v1/events", json=event)).raise_for_status()
    posted = time.monotonic()
    path = f"/v1/leads/{quote(lead_id, safe='@')}"
    while (await pipeline.get(path)).json()["stage"] != "opportunity":
        if time.monotonic() - posted > 60:
            raise TimeoutError(f"{lead_id} did not become an opportunity in 60s")
        await asyncio.sleep(0.01)
    elapsed = (time.monotonic() - posted) * 1000
    out(f"{lead_id} requested a demo: opportunity in the REST API {elapsed:.0f} ms after the 202")

"""The HTTP edge of ``leadflow import``: ingest's batch endpoint and the pipeline's leads.

Both retry what is worth retrying (a 429 or 503, honouring ``Retry-After``; a connection
that fails or times out) with :func:`shared.retrying.until_written`'s backoff, a bounded
number of times: resending a batch is safe, since every event carries its ``event_id``
and scoring applies an id once per lead. What retrying cannot fix (a refused key, an
answer it does not understand) stops the import with one line that says what to do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from shared.backfill.plan import LeadFacts
from shared.backfill.run import Delivery, ImportStopped, Rejection
from shared.events import ANONYMOUS_PREFIX, EventIn
from shared.retrying import STOPPED, until_written

log = logging.getLogger("leadflow.import")

RETRIED_STATUSES = frozenset({429, 502, 503, 504})

FACT_REQUESTS_IN_FLIGHT = 16
"""Leads looked up at once: enough to hide the round trips, few enough for a live pipeline."""

LISTING_PAGE = 1000
"""Leads per page of the listing: the pipeline's largest page, unless configured lower."""


class Retryable(Exception):
    """An answer that asks to be tried again, later."""

    def __init__(self, response: httpx.Response) -> None:
        request = response.request
        super().__init__(f"{request.method} {request.url} answered {response.status_code}")
        self.retry_after = _seconds(response.headers.get("retry-after"))


def _seconds(value: str | None) -> float | None:
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the backoff's own wait will do


def client(base_url: str, api_key: str | None, timeout: float = 60.0) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)


class Retrying:
    """One request, tried until it gets an answer that is not asking to be retried."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts

    async def __call__(
        self, request: Callable[[], Awaitable[httpx.Response]], what: str
    ) -> httpx.Response:
        failures = 0
        stopping = asyncio.Event()
        last: list[BaseException] = []

        async def attempt() -> httpx.Response:
            try:
                response = await request()
            except httpx.TransportError as exc:
                last[:] = [exc]
                raise
            if response.status_code in RETRIED_STATUSES:
                failure = Retryable(response)
                last[:] = [failure]
                raise failure
            return response

        def failed() -> None:
            nonlocal failures
            failures += 1
            if failures >= self.attempts:
                stopping.set()

        answer = await until_written(
            attempt,
            retry_on=(Retryable, httpx.TransportError),
            stopping=stopping,
            what=what,
            log=log,
            on_failure=failed,
            wait_hint=lambda exc: exc.retry_after if isinstance(exc, Retryable) else None,
        )
        if answer is STOPPED:
            cause = _describe(last[0]) if last else "no answer"
            raise ImportStopped(f"{what} failed {failures} times, last: {cause}")
        return answer


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc}): is the service running, is the URL right?"
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, Retryable) else str(exc)


def refused_key(response: httpx.Response, needs: str) -> ImportStopped:
    request = response.request
    answer = f"{request.method} {request.url} answered {response.status_code}"
    if response.status_code == 401:
        return ImportStopped(
            f"{answer}: give a valid key with --api-key or $LEADFLOW_IMPORT_API_KEY"
        )
    return ImportStopped(f"{answer}: the key lacks a scope; the import needs {needs}")


class HttpIngest:
    """:class:`~shared.backfill.run.EventSink` over ``POST /v1/events/batch``.

    A batch is accepted whole or refused whole; a 422 names the items it refuses, so those
    are rejected (with ingest's reason) and the rest posted again; a 413 (the batch is
    larger than ingest's body limit) is posted again in halves.
    """

    def __init__(self, http: httpx.AsyncClient, attempts: int = 8) -> None:
        self.http = http
        self.retrying = Retrying(attempts)

    async def send(self, events: Sequence[EventIn]) -> Delivery:
        rejected: list[Rejection] = []
        await self._send(list(events), rejected)
        return Delivery(rejected)

    async def _send(self, events: list[EventIn], rejected: list[Rejection]) -> None:
        if not events:
            return
        body = b"[" + b",".join(event.to_json() for event in events) + b"]"
        response = await self.retrying(
            lambda: self.http.post(
                "/v1/events/batch", content=body, headers={"Content-Type": "application/json"}
            ),
            f"posting {len(events)} events to ingest",
        )
        status = response.status_code
        if status == 202:
            return
        if status in (401, 403):
            raise refused_key(response, "events:write on ingest (and crm:write for CRM events)")
        if status == 413 and len(events) > 1:
            half = len(events) // 2
            await self._send(events[:half], rejected)
            await self._send(events[half:], rejected)
            return
        if status == 413:
            rejected.append(Rejection(events[0], "larger than ingest's body limit (413)"))
            return
        if status == 422:
            refused = _refused_items(response, len(events))
            if refused:
                rejected.extend(Rejection(events[i], reason) for i, reason in refused.items())
                await self._send([e for i, e in enumerate(events) if i not in refused], rejected)
                return
        raise ImportStopped(f"POST {response.request.url} answered {status}: {_detail(response)}")


def _refused_items(response: httpx.Response, count: int) -> dict[int, str]:
    """Each refused item's index and reasons, from a 422's ``["body", index, field...]``."""
    refused: dict[int, list[str]] = {}
    detail = _json(response).get("detail")
    for error in detail if isinstance(detail, list) else []:
        loc = error.get("loc") if isinstance(error, dict) else None
        if isinstance(loc, list) and len(loc) >= 2 and isinstance(loc[1], int) and loc[1] < count:
            field = ".".join(str(part) for part in loc[2:]) or "event"
            refused.setdefault(loc[1], []).append(f"{field}: {error.get('msg')}")
    return {index: "; ".join(reasons) for index, reasons in refused.items()}


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _detail(response: httpx.Response) -> str:
    detail = _json(response).get("detail")
    return str(detail) if detail is not None else response.text[:200]


class HttpLeadFacts:
    """:class:`~shared.backfill.run.LeadFactsSource` over the pipeline's REST API
    (``leads:read``): each lead's ``as_of``.

    The cheaper of two ways: one ``GET /v1/leads/{lead_id}`` per lead, several at once;
    or, when the system holds few leads beside the file's (a first backfill: none at all),
    the whole listing in change order (``GET /v1/leads?updated_after=``), a page of
    :data:`LISTING_PAGE` leads a request. The funnel's ``total_leads`` says which.
    """

    def __init__(self, http: httpx.AsyncClient, attempts: int = 8) -> None:
        self.http = http
        self.retrying = Retrying(attempts)

    async def facts(self, lead_ids: Collection[str]) -> Mapping[str, LeadFacts]:
        wanted = set(lead_ids)
        if not wanted:
            return {}
        total = await self._total_leads()
        if total == 0:
            return {}
        if total is not None and (total // LISTING_PAGE + 1) * FACT_REQUESTS_IN_FLIGHT < len(
            wanted
        ):
            listed = await self._listed(wanted)
            if listed is not None:
                # a visitor merged into a lead is listed under the lead's id only
                merged = {i for i in wanted - listed.keys() if i.startswith(ANONYMOUS_PREFIX)}
                return {**listed, **await self._looked_up(merged)}
        return await self._looked_up(wanted)

    async def _get(self, path: str, what: str, **params: str | int) -> httpx.Response:
        response = await self.retrying(lambda: self.http.get(path, params=params), what)
        if response.status_code in (401, 403):
            raise refused_key(response, "leads:read on the pipeline")
        return response

    async def _total_leads(self) -> int | None:
        response = await self._get("/v1/funnel", "reading the pipeline's funnel")
        total = _json(response).get("total_leads") if response.status_code == 200 else None
        return total if isinstance(total, int) else None

    async def _listed(self, wanted: set[str]) -> dict[str, LeadFacts] | None:
        """``None`` when the pipeline will not list (a smaller page limit): look them up."""
        found: dict[str, LeadFacts] = {}
        cursor = "0"
        while True:
            response = await self._get(
                "/v1/leads",
                "listing the pipeline's leads",
                updated_after=cursor,
                limit=LISTING_PAGE,
            )
            if response.status_code != 200:
                return None
            page = _json(response)
            items = page.get("items")
            if not isinstance(items, list) or not items:
                return found  # an empty page: every lead's latest state seen
            for item in items:
                if isinstance(item, dict) and item.get("lead_id") in wanted:
                    found[item["lead_id"]] = _facts(item)
            cursor = str(page.get("next_cursor"))

    async def _looked_up(self, wanted: set[str]) -> dict[str, LeadFacts]:
        gate = asyncio.Semaphore(FACT_REQUESTS_IN_FLIGHT)
        found: dict[str, LeadFacts] = {}

        async def one(lead_id: str) -> None:
            async with gate:
                facts = await self._lead(lead_id)
            if facts is not None:
                found[lead_id] = facts

        await asyncio.gather(*(one(lead_id) for lead_id in sorted(wanted)))
        return found

    async def _lead(self, lead_id: str) -> LeadFacts | None:
        response = await self._get(
            f"/v1/leads/{quote(lead_id, safe='@')}", f"reading lead {lead_id} from the pipeline"
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ImportStopped(
                f"GET {response.request.url} answered {response.status_code}: {_detail(response)}"
            )
        return _facts(_json(response))


def _facts(lead: Mapping[str, Any]) -> LeadFacts:
    as_of = lead.get("as_of")
    return LeadFacts(datetime.fromisoformat(as_of) if isinstance(as_of, str) else None)

"""The delivery loop: due messages from the database, posted, each attempt recorded.

Nothing is held only in memory: a message is pending in the database until a
2xx is recorded for it, so a process killed mid-delivery posts it again after
the restart, with the same ``webhook-id``. Each endpoint has its own limit of
deliveries in flight (and optionally a rate), and due messages are taken per
endpoint, so a slow or dead endpoint uses up only its own share. ``clock``
decides what is due and what the schedule says: tests move it by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from services.webhooks import metrics, retry_schedule, store
from services.webhooks.destinations import resolve
from services.webhooks.sealing import SecretBox
from services.webhooks.settings import WebhooksSettings
from services.webhooks.signing import signed_headers
from services.webhooks.ssrf import Policy, UnsafeUrl
from services.webhooks.tables import EndpointRow, MessageRow
from shared.database import Database
from shared.rate_limit import RateLimiter
from shared.retrying import STOPPED, until_written

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

BACKLOG_EVERY_SECONDS = 2.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def secrets_in_force(endpoint: EndpointRow, box: SecretBox, now: datetime) -> list[str]:
    """The current secret, and the previous one while its overlap lasts."""
    current = [box.open(endpoint.secret)]
    until = endpoint.previous_secret_until
    if endpoint.previous_secret is not None and until is not None and now < until:
        current.append(box.open(endpoint.previous_secret))
    return current


class Delivery:
    """Posts one attempt: the outcome, never an exception for what the receiver did."""

    def __init__(self, settings: WebhooksSettings, box: SecretBox, clock: Clock) -> None:
        self.policy = Policy.of(settings.webhooks_allow_http, settings.allowed_networks)
        self.box = box
        self.clock = clock
        self.timeout = settings.webhooks_timeout_seconds
        self._clients: dict[str, httpx.AsyncClient] = {}

    def client(self, endpoint_id: str) -> httpx.AsyncClient:
        """Each endpoint its own connection pool: httpx's pool scans all of its
        connections for every request, so one pool shared by many busy endpoints
        spends its time choosing connections (docs/benchmarks.md, webhooks), and a
        dead endpoint's connections never sit in a live one's pool."""
        client = self._clients.get(endpoint_id)
        if client is None:
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
                headers={"user-agent": "leadflow-webhooks/1"},
                trust_env=False,
            )
            self._clients[endpoint_id] = client
        return client

    async def attempt(
        self, endpoint: EndpointRow, webhook_id: str, body: bytes
    ) -> tuple[store.AttemptResult, httpx.Response | None]:
        now = self.clock()
        started = time.monotonic()

        def result(
            outcome: str, code: int | None = None, error: str | None = None
        ) -> store.AttemptResult:
            latency = (time.monotonic() - started) * 1000
            return store.AttemptResult(now, outcome, code, latency, error)

        try:
            destination = await resolve(endpoint.url, self.policy)
        except UnsafeUrl as exc:
            return result("refused", error=str(exc)), None
        # The timestamp is the wall clock's, whatever ``clock`` says: receivers compare it
        # with theirs to refuse replayed requests.
        in_force = secrets_in_force(endpoint, self.box, now)
        headers = signed_headers(in_force, webhook_id, utc_now(), body)
        headers["host"] = destination.host_header
        try:
            response = await self.client(endpoint.endpoint_id).post(
                destination.url,
                content=body,
                headers=headers,
                extensions={"sni_hostname": destination.server_name},
            )
        except httpx.TimeoutException:
            return result("timeout", error="no response within the timeout"), None
        except httpx.HTTPError as exc:
            return result("failure", error=f"{type(exc).__name__}: {exc}"[:500]), None
        if response.is_success:
            return result("success", response.status_code), response
        return result("failure", response.status_code, f"HTTP {response.status_code}"), response

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(client.aclose() for client in clients))


def next_state(
    attempts_made: int, response: httpx.Response | None, now: datetime
) -> tuple[str, datetime | None]:
    """The message's status and next attempt time after ``attempts_made`` attempts."""
    if response is not None and response.is_success:
        return store.DELIVERED, None
    delay = retry_schedule.next_delay(attempts_made)
    if delay is None:
        return store.FAILED, None
    if response is not None and response.status_code in (429, 503):
        asked = retry_schedule.retry_after(response.headers.get("retry-after"))
        if asked is not None:
            delay = asked
    return store.PENDING, now + delay


class Deliverer:
    """The loop, a task of the app's lifespan beside the consumer."""

    def __init__(
        self, settings: WebhooksSettings, database: Database, box: SecretBox, clock: Clock
    ) -> None:
        self.settings = settings
        self.database = database
        self.clock = clock
        self.delivery = Delivery(settings, box, clock)
        self.started = asyncio.Event()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._unsettled: set[int] = set()
        """Delivered or attempted, the outcome not written yet: not due again meanwhile."""
        self._outcomes: list[store.Outcome] = []
        self._outcome_ready = asyncio.Event()
        self._per_endpoint: dict[str, int] = {}
        self._rates: dict[str, tuple[float, RateLimiter]] = {}
        self._backlog_at = 0.0
        self._reported: set[str] = set()

    def wake(self) -> None:
        """New messages are stored, or the clock moved: look now, not at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        self.started.set()
        recording = asyncio.create_task(self._record(), name="webhooks-attempts")
        try:
            while not self._stopping.is_set():
                try:
                    await self._start_due()
                    await self._report_backlog()
                except Exception as exc:  # the database is down: keep trying, lose nothing
                    log.warning("looking for due messages failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.webhooks_poll_seconds):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            for task in list(self._in_flight.values()):
                task.cancel()
            await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
            self._outcome_ready.set()
            await asyncio.gather(recording, return_exceptions=True)
            await self.delivery.close()

    async def _start_due(self) -> None:
        free = self.settings.webhooks_max_in_flight - len(self._in_flight)
        if free <= 0:
            return
        now = self.clock()
        async with self.database.sessions() as session:
            waiting = await store.due_endpoints(session, now)
            if not waiting:
                return
            enabled = await store.enabled_endpoints(session)
            endpoints = [e for e in enabled if e.endpoint_id in waiting]
            for endpoint in endpoints:
                room = min(
                    free, endpoint.concurrency - self._per_endpoint.get(endpoint.endpoint_id, 0)
                )
                if room <= 0:
                    continue
                due = await store.due_messages(
                    session,
                    endpoint.endpoint_id,
                    now,
                    room,
                    self._in_flight.keys() | self._unsettled,
                )
                for message in due:
                    if not self._may_send(endpoint):
                        break
                    self._launch(endpoint, message)
                    free -= 1

    def _may_send(self, endpoint: EndpointRow) -> bool:
        if endpoint.rate_limit is None:
            return True
        held = self._rates.get(endpoint.endpoint_id)
        if held is None or held[0] != endpoint.rate_limit:
            burst = max(1, int(endpoint.rate_limit))
            held = (endpoint.rate_limit, RateLimiter(endpoint.rate_limit, burst))
            self._rates[endpoint.endpoint_id] = held
        return held[1].retry_after(endpoint.endpoint_id) is None

    def _launch(self, endpoint: EndpointRow, message: MessageRow) -> None:
        key = endpoint.endpoint_id
        self._per_endpoint[key] = self._per_endpoint.get(key, 0) + 1
        task = asyncio.create_task(self._deliver(endpoint, message))
        self._in_flight[message.message_id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._in_flight.pop(message.message_id, None)
            self._per_endpoint[key] -= 1
            self._wake.set()

        task.add_done_callback(done)

    async def _deliver(self, endpoint: EndpointRow, message: MessageRow) -> None:
        result, response = await self.delivery.attempt(endpoint, message.webhook_id, message.body)
        attempts_made = message.attempts + 1
        status, next_at = next_state(attempts_made, response, result.attempted_at)
        gone = response is not None and response.status_code == 410
        metrics.DELIVERIES.labels(endpoint.endpoint_id, result.outcome).inc()
        if response is not None:
            metrics.LATENCY.labels(endpoint.endpoint_id).observe(result.latency_ms / 1000)
        if status == store.FAILED:
            metrics.FAILED.labels(endpoint.endpoint_id).inc()
        reason = "the endpoint answered 410 Gone" if gone else None
        self._unsettled.add(message.message_id)
        self._outcomes.append(store.Outcome(message.message_id, result, status, next_at, reason))
        self._outcome_ready.set()

    async def _record(self) -> None:
        """Writes the outcomes that are waiting, all in one transaction, until stopped.

        Deliveries that end while a write is under way are written together by the
        next one. A message stays out of the due ones it is taken from until its
        outcome is written; not written (stopping first), it stays pending, and is
        sent again.
        """
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            batch, self._outcomes = self._outcomes, []
            if batch:
                written = await until_written(
                    functools.partial(store.record_attempts, self.database.sessions, batch),
                    retry_on=(Exception,),
                    stopping=self._stopping,
                    what="recording attempts",
                    log=log,
                )
                if written is STOPPED:
                    return
                self._unsettled.difference_update(o.message_id for o in batch)
                self._wake.set()
            if self._stopping.is_set() and not self._outcomes:
                return

    async def _report_backlog(self) -> None:
        if time.monotonic() - self._backlog_at < BACKLOG_EVERY_SECONDS:
            return
        self._backlog_at = time.monotonic()
        now = self.clock()
        async with self.database.sessions() as session:
            backlogs = await store.backlogs(session)
            disabled = await store.disabled_count(session)
        for backlog in backlogs:
            metrics.PENDING.labels(backlog.endpoint_id).set(backlog.pending)
            age = (now - backlog.oldest) if backlog.oldest else timedelta(0)
            metrics.OLDEST_PENDING.labels(backlog.endpoint_id).set(max(0.0, age.total_seconds()))
        for gone in self._reported - {b.endpoint_id for b in backlogs}:
            metrics.PENDING.remove(gone)  # a deleted endpoint
            metrics.OLDEST_PENDING.remove(gone)
        self._reported = {b.endpoint_id for b in backlogs}
        metrics.DISABLED.set(disabled)

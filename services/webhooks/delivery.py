"""The delivery loop: due messages claimed from the database, posted, the attempts recorded.

Nothing is held only in memory: a message is pending in the database until a
2xx is recorded for it, so a process killed mid-delivery posts it again once
its claim's lease ends, with the same ``webhook-id``. Each endpoint has its own
limit of deliveries in flight (and optionally a rate), and due messages are
claimed per endpoint, so a slow or dead endpoint uses up only its own share.
Claims are leases in the database, so replicas sharing it never take the same
message while the lease lasts. ``clock`` decides what is due and what the
schedule says: tests move it by hand.
"""

from __future__ import annotations

import asyncio
import collections
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
from services.webhooks.tables import EndpointRow
from shared.database import Database
from shared.rate_limit import RateLimiter
from shared.retrying import STOPPED, until_written

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

BACKLOG_EVERY_SECONDS = 2.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def secrets_in_force(
    endpoint: EndpointRow, open_secret: Callable[[str], str], now: datetime
) -> list[str]:
    """The current secret, and the previous one while its overlap lasts."""
    current = [open_secret(endpoint.secret)]
    until = endpoint.previous_secret_until
    if endpoint.previous_secret is not None and until is not None and now < until:
        current.append(open_secret(endpoint.previous_secret))
    return current


class Delivery:
    """Posts one attempt: the outcome, never an exception for what the receiver did."""

    def __init__(self, settings: WebhooksSettings, box: SecretBox, clock: Clock) -> None:
        self.policy = Policy.of(settings.webhooks_allow_http, settings.allowed_networks)
        self.box = box
        self.clock = clock
        self.timeout = settings.webhooks_timeout_seconds
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._opened: dict[str, str] = {}

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

    def _open(self, sealed: str) -> str:
        """Opened once per sealed value: a rotation seals a new one, so nothing goes stale."""
        opened = self._opened.get(sealed)
        if opened is None:
            if len(self._opened) > 10_000:
                self._opened.clear()
            opened = self._opened[sealed] = self.box.open(sealed)
        return opened

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
        in_force = secrets_in_force(endpoint, self._open, now)
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


PREFETCH_ROUNDS = 4
"""An endpoint holds at first up to this many times its concurrency of claimed messages:
claimed in one statement, started as its slots free, without a query per delivery. It
claims more once fewer than half of its depth is queued."""
MAX_PREFETCH_ROUNDS = 64
"""How deep an endpoint's queue may grow: its depth doubles each time a full claim comes
back to find its slots idle and its queue empty (the claim's round trips took longer
than the queue lasted: a fast receiver with a backlog), and falls back to
:data:`PREFETCH_ROUNDS` once a claim finds fewer due than it had room for."""


class Deliverer:
    """The loop, a task of the app's lifespan beside the consumer.

    Due messages are claimed for many endpoints at once (``store.claim``), with a
    lease: queued here per endpoint, started as the endpoint's slots free, their
    outcomes written together by one task (``_record``), which also extends the
    lease of what it still holds. Endpoints are read again when messages are stored or
    an endpoint is enabled, and at least every poll interval.
    """

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
        self._look = True
        """Read the endpoints and claim at the next turn: messages were stored, an endpoint
        changed, or the poll's time came."""
        self._looked_at = 0.0
        self._claiming: asyncio.Task[None] | None = None
        self._more: set[str] = set()
        """Endpoints whose last claim was full, or had no room: more may be due already."""
        self._endpoints: dict[str, EndpointRow] = {}
        self._queued: dict[str, collections.deque[store.Claimed]] = {}
        self._held: dict[int, store.Claimed] = {}
        """Claimed and the outcome not written: queued, in flight, or being written."""
        self._unsent: dict[str, int] = {}
        """By endpoint: claimed and queued or in flight (what its room is counted from; an
        outcome waiting to be written takes no room, so a slow write never idles it)."""
        self._in_flight: set[asyncio.Task[None]] = set()
        """The slots taken: each posts one message, then its endpoint's next (``_slot``)."""
        self._per_endpoint: dict[str, int] = {}
        self._depth: dict[str, int] = {}
        """By endpoint: how many rounds of its concurrency it may hold claimed."""
        self._outcomes: list[store.Outcome] = []
        self._outcome_ready = asyncio.Event()
        self._rates: dict[str, tuple[float, RateLimiter]] = {}
        self._backlog_at = 0.0
        self._reported: set[str] = set()

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.webhooks_lease_seconds)

    def wake(self) -> None:
        """New messages are stored, or the clock moved: look now, not at the next poll."""
        self._look = True
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        self.started.set()
        recording = asyncio.create_task(self._record(), name="webhooks-attempts")
        try:
            while not self._stopping.is_set():
                if recording.done():  # it never ends before a stop: its error ends the loop
                    recording.result()
                    raise RuntimeError("the attempts' writer ended")
                if time.monotonic() - self._looked_at >= self.settings.webhooks_poll_seconds:
                    self._look = True  # also while deliveries keep waking the loop
                try:
                    self._claim_if_needed()
                    self._start_queued()
                    await self._report_backlog()
                except Exception as exc:  # the database is down: keep trying, lose nothing
                    log.warning("looking for due messages failed: %s", exc)
                try:
                    async with asyncio.timeout(self.settings.webhooks_poll_seconds):
                        await self._wake.wait()
                except TimeoutError:
                    self._look = True
                self._wake.clear()
        finally:
            if self._claiming is not None:  # not cancelled: what it claims is held
                await asyncio.gather(self._claiming, return_exceptions=True)
            for task in list(self._in_flight):
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            self._outcome_ready.set()
            await asyncio.gather(recording, return_exceptions=True)
            # what is still held (not sent, or its outcome not written) is due again now;
            # not released (the database is down), it is due when its lease ends
            with contextlib.suppress(Exception):
                await store.release(self.database.sessions, list(self._held), self.clock())
            await self.delivery.close()

    def _wants_more(self, endpoint_id: str) -> bool:
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is None:
            return False
        refill = self._depth.get(endpoint_id, PREFETCH_ROUNDS) * endpoint.concurrency // 2
        return len(self._queued.get(endpoint_id) or ()) < refill

    def _room(self, endpoint: EndpointRow) -> int:
        depth = self._depth.get(endpoint.endpoint_id, PREFETCH_ROUNDS)
        return depth * endpoint.concurrency - self._unsent.get(endpoint.endpoint_id, 0)

    def _starved(self, endpoint_id: str) -> bool:
        """Slots free and nothing queued: the endpoint is waiting for a claim."""
        endpoint = self._endpoints.get(endpoint_id)
        return (
            endpoint is not None
            and not self._queued.get(endpoint_id)
            and self._per_endpoint.get(endpoint_id, 0) < endpoint.concurrency
        )

    def _deepen(self, rooms: dict[str, int], counts: dict[str, int]) -> None:
        for endpoint_id, room in rooms.items():
            depth = self._depth.get(endpoint_id, PREFETCH_ROUNDS)
            if counts.get(endpoint_id, 0) < room:
                self._depth.pop(endpoint_id, None)  # the backlog is drained
            elif self._starved(endpoint_id) and depth < MAX_PREFETCH_ROUNDS:
                self._depth[endpoint_id] = depth * 2

    def _may_claim(self, endpoint_id: str) -> bool:
        endpoint = self._endpoints.get(endpoint_id)
        return endpoint is not None and self._wants_more(endpoint_id) and self._room(endpoint) > 0

    def _claim_if_needed(self) -> None:
        """A claim runs as a task of its own, so deliveries that end meanwhile are
        followed by the next queued ones at once, not after the claim's round trips."""
        if self._claiming is not None:
            if not self._claiming.done():
                return
            failed = None if self._claiming.cancelled() else self._claiming.exception()
            self._claiming = None
            if failed is not None:  # the database is down: keep trying, lose nothing
                log.warning("claiming due messages failed: %s", failed)
        look = self._look
        if not look and not any(self._may_claim(e) for e in self._more):
            return
        self._look = False
        if look:
            self._looked_at = time.monotonic()
        self._claiming = asyncio.create_task(self._claim(look), name="webhooks-claim")
        self._claiming.add_done_callback(lambda _: self._wake.set())

    async def _claim(self, look: bool) -> None:
        """``look``: read the endpoints first (new messages, the poll's time, an endpoint
        changed); without, a claim for the endpoints whose queues run low."""
        now = self.clock()
        if look:
            await self._read_endpoints(now)
        rooms = {
            e.endpoint_id: self._room(e)
            for e in self._endpoints.values()
            if self._wants_more(e.endpoint_id)
        }
        with metrics.CLAIM_SECONDS.time():
            claimed = await store.claim(self.database.sessions, rooms, now, now + self.lease)
        counts: dict[str, int] = {}
        for message in claimed:
            counts[message.endpoint_id] = counts.get(message.endpoint_id, 0) + 1
        self._deepen(rooms, counts)
        self._hold(claimed)
        # full, or no room while outcomes wait to be written: claim again when there is
        self._more = {e for e, room in rooms.items() if counts.get(e, 0) >= room}

    def _hold(self, messages: list[store.Claimed]) -> None:
        for message in messages:
            if message.message_id in self._held:
                continue  # its lease had ended while held here: it is ours again
            self._held[message.message_id] = message
            self._unsent[message.endpoint_id] = self._unsent.get(message.endpoint_id, 0) + 1
            self._queued.setdefault(message.endpoint_id, collections.deque()).append(message)

    def handover(self) -> store.Handover | None:
        """Room for the messages a consumer batch is about to store, so they are stored
        leased to this deliverer and posted once committed, without a claim's round trips
        between (docs/architecture.md §10, *Handed over leased*). Only endpoints with no
        due backlog known (a full last claim): a backlog is older, and goes first."""
        if self._stopping.is_set():
            return None
        rooms = {
            endpoint_id: room
            for endpoint_id, endpoint in self._endpoints.items()
            if endpoint_id not in self._more and (room := self._handover_room(endpoint)) > 0
        }
        return store.Handover(rooms, self.clock() + self.lease) if rooms else None

    def _handover_room(self, endpoint: EndpointRow) -> int:
        """An endpoint waiting with free slots and nothing queued takes the deepest queue
        at once: a burst then reaches it whole, not one claim's depth at a time (a slow
        endpoint is never waiting so, so it is never handed more than its room)."""
        if not self._starved(endpoint.endpoint_id):
            return self._room(endpoint)
        rounds = MAX_PREFETCH_ROUNDS * endpoint.concurrency
        return rounds - self._unsent.get(endpoint.endpoint_id, 0)

    def accept(self, handover: store.Handover) -> None:
        """Queue the messages stored leased to this deliverer (committed by now). An
        endpoint disabled or deleted meanwhile: they stay leased and are due again when
        the lease ends, as any message this process held and did not send."""
        self._hold([m for m in handover.taken if m.endpoint_id in self._endpoints])
        self._wake.set()

    async def _read_endpoints(self, now: datetime) -> None:
        async with self.database.sessions() as session:
            enabled = {e.endpoint_id: e for e in await store.enabled_endpoints(session)}
        gone = [c for e, queue in self._queued.items() if e not in enabled for c in queue]
        if gone:  # disabled or deleted meanwhile: not sent, due again for when it is back
            for message in gone:
                del self._held[message.message_id]
                self._unsent[message.endpoint_id] -= 1
            self._queued = {e: q for e, q in self._queued.items() if e in enabled}
            await store.release(self.database.sessions, [c.message_id for c in gone], now)
        self._endpoints = enabled

    def _start_queued(self) -> None:
        """Endpoints take turns for the slots, one message each round."""
        free = self.settings.webhooks_max_in_flight - len(self._in_flight)
        waiting = [e for e, queue in self._queued.items() if queue]
        while free > 0 and waiting:
            still = []
            for endpoint_id in waiting:
                endpoint = self._endpoints.get(endpoint_id)
                queue = self._queued[endpoint_id]
                if endpoint is None or not queue or free <= 0:
                    continue
                if self._per_endpoint.get(endpoint_id, 0) >= endpoint.concurrency:
                    continue
                if not self._may_send(endpoint):
                    continue
                self._launch(endpoint, queue.popleft())
                free -= 1
                if queue:
                    still.append(endpoint_id)
            waiting = still

    def _may_send(self, endpoint: EndpointRow) -> bool:
        if endpoint.rate_limit is None:
            return True
        held = self._rates.get(endpoint.endpoint_id)
        if held is None or held[0] != endpoint.rate_limit:
            burst = max(1, int(endpoint.rate_limit))
            held = (endpoint.rate_limit, RateLimiter(endpoint.rate_limit, burst))
            self._rates[endpoint.endpoint_id] = held
        return held[1].retry_after(endpoint.endpoint_id) is None

    def _launch(self, endpoint: EndpointRow, message: store.Claimed) -> None:
        key = endpoint.endpoint_id
        self._per_endpoint[key] = self._per_endpoint.get(key, 0) + 1
        task = asyncio.create_task(self._slot(endpoint, message))
        self._in_flight.add(task)

        def done(_: asyncio.Task[None]) -> None:
            self._in_flight.discard(task)
            self._per_endpoint[key] -= 1
            self._wake.set()

        task.add_done_callback(done)

    async def _slot(self, endpoint: EndpointRow, message: store.Claimed) -> None:
        """One slot of an endpoint: its message, then the endpoint's next queued one while
        no other endpoint can be waiting for a slot, without going back to the loop (a task
        ended, the loop's turn, a task started: waits a post of a fast receiver would pay
        each time)."""
        key = endpoint.endpoint_id
        following: tuple[EndpointRow, store.Claimed] | None = (endpoint, message)
        while following is not None:
            endpoint, message = following
            try:
                delivered = await self._deliver(endpoint, message)
            finally:
                self._unsent[key] -= 1
            # after a failure the loop decides (a 410 disables the endpoint once written)
            following = self._next_of(key) if delivered else None
            if following is None or self._wants_more(key):
                self._wake.set()  # the loop claims, or gives the slot to another endpoint

    def _next_of(self, endpoint_id: str) -> tuple[EndpointRow, store.Claimed] | None:
        """The endpoint's next queued message for a slot that just finished, if it may go."""
        endpoint = self._endpoints.get(endpoint_id)  # None: disabled or deleted meanwhile
        queue = self._queued.get(endpoint_id)
        if endpoint is None or not queue or self._stopping.is_set():
            return None
        if len(self._in_flight) >= self.settings.webhooks_max_in_flight:
            return None  # every slot is taken: the loop hands this one out in turn
        if self._per_endpoint.get(endpoint_id, 0) > endpoint.concurrency:
            return None  # its concurrency was lowered meanwhile
        if not self._may_send(endpoint):
            return None
        return endpoint, queue.popleft()

    async def _deliver(self, endpoint: EndpointRow, message: store.Claimed) -> bool:
        """Whether the receiver took it (2xx)."""
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
        self._outcomes.append(store.Outcome(message.message_id, result, status, next_at, reason))
        self._outcome_ready.set()
        return status == store.DELIVERED

    async def _record(self) -> None:
        """Writes the outcomes that are waiting, all in one transaction, until stopped;
        every third of a lease, extends the lease of the messages still held.

        Deliveries that end while a write is under way are written together by the
        next one. Not written (stopping first), a message stays pending, and is sent
        again when its lease ends. One task for both, so an extension never overwrites
        the next attempt time an outcome just wrote.
        """
        every = self.settings.webhooks_lease_seconds / 3
        extended = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._outcome_ready.wait()
            self._outcome_ready.clear()
            batch, self._outcomes = self._outcomes, []
            if batch:
                started = time.monotonic()
                written = await until_written(
                    functools.partial(store.record_attempts, self.database.sessions, batch),
                    retry_on=(Exception,),
                    stopping=self._stopping,
                    what="recording attempts",
                    log=log,
                )
                if written is STOPPED:
                    self._outcomes = batch + self._outcomes
                    return
                metrics.RECORD_SECONDS.observe(time.monotonic() - started)
                for outcome in batch:
                    self._held.pop(outcome.message_id, None)
                    if outcome.disable_reason is not None:
                        self._look = True  # read the endpoints again
                self._wake.set()
            if self._stopping.is_set() and not self._outcomes:
                return
            if time.monotonic() - extended >= every and self._held:
                extended = time.monotonic()
                try:
                    await store.extend(
                        self.database.sessions, list(self._held), self.clock() + self.lease
                    )
                except Exception as exc:  # the lease may end: then sent twice, never lost
                    log.warning("extending the lease of held messages failed: %s", exc)

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

"""Backing off reconnects to a broker that is down, for every Kafka client leadflow makes.

aiokafka 0.14 has no ``reconnect.backoff.ms``: each request to a broker that is down
tries to connect again at once, logs an error and forces a metadata update, and that
update fails just as fast. A producer with batches waiting for a partition leader
loops on it with no pause, two error lines per turn. Here each client waits, per
broker, between connection attempts, and after a metadata update that reached no
broker, doubling the wait from :data:`FIRST` up to :data:`MOST` and starting again at
the first success, as the Java client's ``reconnect.backoff.ms`` does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.client import AIOKafkaClient

FIRST = 0.05
"""Seconds of the first wait after a failure (the Java client's default)."""
MOST = 1.0
"""The longest wait: how late, at worst, a client notices that the broker is back."""


class Backoff:
    """Exponential waits after consecutive failures; the clock is injected for tests."""

    def __init__(
        self, first: float = FIRST, most: float = MOST, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.first = first
        self.most = most
        self.clock = clock
        self.delay = 0.0
        self.until = 0.0

    def waiting(self) -> bool:
        """Whether a new attempt should wait (the last one failed too recently)."""
        return self.clock() < self.until

    def failed(self) -> float:
        """Record a failure; returns how long to wait before the next attempt."""
        self.delay = min(self.most, self.delay * 2) if self.delay else self.first
        self.until = self.clock() + self.delay
        return self.delay

    def succeeded(self) -> None:
        self.delay = 0.0
        self.until = 0.0


def back_off_reconnects(
    client: AIOKafkaClient,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AIOKafkaClient:
    """Wrap ``client``'s connection and metadata calls with :class:`Backoff` (in place).

    Both are aiokafka internals (``_get_conn``, ``_metadata_update``), kept as they are
    and only delayed, so the client behaves as before once the broker answers.
    """
    get_conn: Callable[..., Awaitable[Any]] = client._get_conn
    update: Callable[..., Awaitable[bool]] = client._metadata_update
    per_node: dict[Any, Backoff] = {}
    metadata = Backoff(clock=clock)

    async def connection(node_id: Any, **options: Any) -> Any:
        backoff = per_node.setdefault(node_id, Backoff(clock=clock))
        if backoff.waiting():
            return None  # as aiokafka answers for a failed connect: the caller retries
        conn = await get_conn(node_id, **options)
        if conn is None:
            backoff.failed()
        else:
            backoff.succeeded()
        return conn

    async def metadata_update(cluster: Any, topics: Any) -> bool:
        updated = await update(cluster, topics)
        if updated:
            metadata.succeeded()
        else:
            await sleep(metadata.failed())  # the callers' retry loops wait with it
        return updated

    client._get_conn = connection
    client._metadata_update = metadata_update
    return client

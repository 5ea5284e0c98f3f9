"""Publishing accepted events to ``leadflow.events``: the only place ingest touches Kafka.

A request is acknowledged only once every one of its records is acknowledged
by the broker with ``acks=all``. When that does not happen in time the
caller answers 503: some records may still land later, which is harmless
because clients retry with the same ``event_id`` and scoring counts each id
once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.ingest.settings import IngestSettings
from shared.events import Event
from shared.kafka import encode_key, make_producer

log = logging.getLogger(__name__)


class KafkaUnavailable(Exception):
    """The events could not be confirmed as written; the client should retry."""


class EventPublisher:
    """Owns the idempotent producer; (re)connects lazily so ingest starts without Kafka."""

    def __init__(self, settings: IngestSettings) -> None:
        self._settings = settings
        self._topic = settings.topics.events
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                producer = make_producer(self._settings, name="ingest")
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
        return self._producer

    async def publish(self, events: Sequence[Event]) -> None:
        """Write ``events`` keyed by lead_id; return only when all are acknowledged."""
        try:
            async with asyncio.timeout(self._settings.publish_timeout_seconds):
                producer = await self._connected()
                deliveries = [
                    await producer.send(self._topic, event.to_json(), key=encode_key(event.lead_id))
                    for event in events
                ]
                await asyncio.gather(*deliveries)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("publishing %d event(s) failed: %r", len(events), exc)
            raise KafkaUnavailable(str(exc) or type(exc).__name__) from exc

    async def is_ready(self) -> bool:
        """Kafka answers a metadata request now (not just: it did once)."""
        try:
            async with asyncio.timeout(2):
                producer = await self._connected()
                await producer.client.fetch_all_metadata()
                return True
        except (KafkaError, TimeoutError, OSError):
            return False

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

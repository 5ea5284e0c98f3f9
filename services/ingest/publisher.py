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
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    UnknownProducerId,
)

from services.ingest.settings import IngestSettings
from shared.events import Event
from shared.kafka import by_partition, encode_key, make_producer, send_as_batches
from shared.kafka_outage import Reconnection, check_connection

log = logging.getLogger(__name__)


OWN_BATCH_MIN = 32
"""Events of one request for one partition from which they go as a batch of their own."""

LINGER_MS = 0
"""No linger: aiokafka keeps one produce request in flight per broker, so under load the
events that arrive meanwhile go together in the next one anyway. Lingering on top made
every single-event post wait for it (median at 1000 posts/s: about 7 ms with 5 ms of
linger, 2.5 ms without), and its per-partition timers split concurrent posts over more
produce requests (16 events each instead of 32 for 32 posts in flight), more CPU per event.
Under light load the requests are smaller, and the broker gets more of them."""


SEQUENCE_BROKEN = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch)
"""Errors after which the producer's id and sequence numbers are of no more use."""


class KafkaUnavailable(Exception):
    """The events could not be confirmed as written; the client should retry."""


class EventPublisher:
    """Owns the idempotent producer; (re)connects lazily so ingest starts without Kafka.

    While Kafka does not let the producer in, requests get a 503 at once and the next
    connection is tried only after a growing delay; the cause is logged once.
    """

    def __init__(self, settings: IngestSettings) -> None:
        self._settings = settings
        self._topic = settings.topics.events
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self.reconnection = Reconnection("ingest", max_delay=5.0)  # the front door: try often

    async def _connected(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                self._producer = await self._connect()
        return self._producer

    async def _connect(self) -> AIOKafkaProducer:
        reconnection = self.reconnection
        if not reconnection.due():
            raise KafkaUnavailable(reconnection.cause or "Kafka is not reachable")
        try:
            await check_connection(self._settings)
            producer = make_producer(self._settings, name="ingest", linger_ms=LINGER_MS)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
        except (KafkaError, TimeoutError, OSError) as exc:
            reconnection.failed(str(exc) or type(exc).__name__)
            raise KafkaUnavailable(reconnection.cause or "Kafka is not reachable") from exc
        reconnection.succeeded()
        return producer

    async def publish(self, events: Sequence[Event]) -> None:
        """Write ``events`` keyed by lead_id; return only when all are acknowledged."""
        producer: AIOKafkaProducer | None = None
        try:
            async with asyncio.timeout(self._settings.publish_timeout_seconds):
                producer = await self._connected()
                if len(events) == 1:
                    await self._send_one(producer, events[0])
                else:
                    await asyncio.gather(*await self._send(producer, events))
        except KafkaUnavailable:
            raise  # not connected: said once by the reconnection
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("publishing %d event(s) failed: %r", len(events), exc)
            if isinstance(exc, SEQUENCE_BROKEN) and producer is not None:
                await self._replace(producer)
            raise KafkaUnavailable(str(exc) or type(exc).__name__) from exc

    async def _replace(self, broken: AIOKafkaProducer) -> None:
        """Drop a producer whose sequence numbers the broker no longer accepts.

        Batches that failed during a broker outage leave gaps in an idempotent
        producer's sequence numbers, and aiokafka keeps its producer id: every later
        batch is refused with OutOfOrderSequenceNumber, for good (seen after a broker
        restart under load). A new producer gets a new id and starts its sequences
        afresh. The refused events were answered 503; their retries keep their
        event_ids, which scoring de-duplicates.
        """
        async with self._lock:
            replaced = self._producer is broken  # or another request replaced it already
            if replaced:
                self._producer = None
        if not replaced:
            return
        log.warning("replacing ingest's Kafka producer: the next one gets a new producer id")
        try:
            await broken.stop()
        except KafkaError as exc:
            log.debug("stopping the replaced producer: %r", exc)

    async def _send_one(self, producer: AIOKafkaProducer, event: Event) -> None:
        """One event (``POST /v1/events``): ``send`` as is, then its delivery.

        The producer's own partitioner places the record where :meth:`_send` would. A
        single record needs none of its grouping, metadata lookups or ``gather``, which
        cost about a sixth of the publishing time of a single-event post.
        """
        key = encode_key(event.lead_id)
        await (await producer.send(self._topic, event.to_json(), key=key))

    async def _send(
        self, producer: AIOKafkaProducer, events: Sequence[Event]
    ) -> list[asyncio.Future[Any]]:
        """Hand the events to the producer; the futures that resolve when Kafka has them.

        ``producer.send`` per event costs a coroutine, a partition lookup, an accumulator
        call and a future per record, and the future of every record is resolved one by
        one when the broker answers: most of ingest's Kafka time for a 1000-event request.
        So a partition's share of a big request goes as batches of its own: the same
        records (same keys, values and partitions, chosen by the producers' partitioner;
        each lead's events in request order), the producer's idempotence and
        acks, a few futures per request. A small share still goes through ``send``: a batch
        of its own would not share a produce request with other requests' events (one batch
        per partition is in flight at a time), which would throttle single-event posts.
        """
        topic = self._topic
        records = ((encode_key(event.lead_id), event.to_json()) for event in events)
        deliveries: list[asyncio.Future[Any]] = []
        for partition, share in (await by_partition(producer, topic, records)).items():
            if len(share) >= OWN_BATCH_MIN:
                deliveries += await send_as_batches(producer, topic, partition, share)
                continue
            # few records: the producer's open batch gathers them with other requests'
            for key, value in share:
                deliveries.append(await producer.send(topic, value, key=key, partition=partition))
        return deliveries

    async def is_ready(self) -> bool:
        """Kafka answers a metadata request now (not just: it did once)."""
        try:
            async with asyncio.timeout(2):
                producer = await self._connected()
                await producer.client.fetch_all_metadata()
                return True
        except (KafkaUnavailable, KafkaError, TimeoutError, OSError):
            return False

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

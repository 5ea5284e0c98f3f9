"""The one Kafka producer, consumer and admin client factory every service uses.

aiokafka's defaults are weak for our guarantees (``acks=1``, no idempotence,
auto-commit, read_uncommitted), so the safe settings live here once, and so do
the TLS and SASL options (:mod:`shared.kafka_security`): every client of every
service, and ``leadflow topics``, connects the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from shared.kafka_security import security_options
from shared.reconnect import back_off_reconnects
from shared.settings import LeadflowSettings


def encode_key(lead_id: str) -> bytes:
    return lead_id.encode()


class KeyPartitioner:
    """aiokafka's default partitioner (murmur2, as the Java client), each key's hash remembered.

    aiokafka's murmur2 is pure Python, a few microseconds a key, and the same leads' keys
    come back all day. Same choice as the default, so records of one lead still land where
    any Kafka client would put them.
    """

    def __init__(self, max_keys: int = 200_000) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys
        self._keyless = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: Sequence[int], available: Any) -> int:
        if key is None:
            return int(self._keyless(key, all_partitions, available))
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


PARTITIONER = KeyPartitioner()
"""The one partitioner: every producer uses it, and code that groups records by partition
before sending asks it (see :func:`by_partition`)."""


class ConsumedRecord(Protocol):
    """What leadflow reads of a consumed record (aiokafka's ``ConsumerRecord`` is one), so
    pure code that takes records is tested with plain values."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


Record = tuple[bytes | None, bytes]
"""A record as it is sent: its key and its value."""

CompactedRecord = tuple[bytes | None, bytes | None]
"""A record of a compacted topic: a ``None`` value is a tombstone (the key's end)."""

Headers = list[tuple[str, bytes]]
"""As aiokafka takes them (its record builder refuses a tuple)."""

NO_HEADERS: Headers = []

HeadedRecord = tuple[bytes | None, bytes, Headers]
"""A record sent with headers (scoring's outputs carry the CloudEvents ``ce_*`` ones)."""

Outgoing = Record | CompactedRecord | HeadedRecord
"""Anything :func:`send_as_batches` sends."""

R = TypeVar("R", bound=Record | HeadedRecord)

Batches = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
"""Records as ``getmany`` gives them: per partition, in offset order."""


async def send_keyed(
    producer: AIOKafkaProducer, topic: str, records: Iterable[Record | HeadedRecord]
) -> list[asyncio.Future[Any]]:
    """:func:`send_as_batches` for each partition the records' keys choose, in their order."""
    deliveries: list[asyncio.Future[Any]] = []
    for partition, share in (await by_partition(producer, topic, records)).items():
        deliveries += await send_as_batches(producer, topic, partition, share)
    return deliveries


async def by_partition(
    producer: AIOKafkaProducer, topic: str, records: Iterable[R]
) -> dict[int, list[R]]:
    """``records`` grouped by the partition :data:`PARTITIONER` gives their keys, in order."""
    partitions = sorted(await producer.partitions_for(topic))
    grouped: dict[int, list[R]] = {}
    for record in records:
        grouped.setdefault(PARTITIONER(record[0], partitions, None), []).append(record)
    return grouped


async def send_as_batches(
    producer: AIOKafkaProducer,
    topic: str,
    partition: int,
    records: Iterable[Outgoing],
) -> list[asyncio.Future[Any]]:
    """Hand ``(key, value)`` records for one partition to the producer as whole batches.

    ``send`` costs a coroutine, a partition lookup, an accumulator call and a future per
    record; a batch built here costs one append per record and a future per batch, with
    the same idempotence, acks and transaction, and goes without waiting out
    ``linger_ms``. Returns the futures that resolve when the broker has the batches.
    Each batch waits for the partition's previous one to drain (aiokafka keeps one in
    flight), so this is for many records at once.
    """
    deliveries: list[asyncio.Future[Any]] = []
    batch = producer.create_batch()
    for record in records:
        key, value = record[0], record[1]
        headers = record[2] if len(record) == 3 else NO_HEADERS
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is not None:
            continue
        deliveries.append(await producer.send_batch(batch, topic, partition=partition))
        batch = producer.create_batch()
        # an empty batch takes any one record (the broker judges its size), but never
        # lose one silently should that change
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            raise MessageSizeTooLargeError(f"a record of {len(value or b'')} bytes fits no batch")
    if batch.record_count():
        batch.close()  # complete: no linger for more records, and no send() joins it
        deliveries.append(await producer.send_batch(batch, topic, partition=partition))
    return deliveries


def make_producer(
    settings: LeadflowSettings,
    *,
    name: str,
    transactional_id: str | None = None,
    **overrides: Any,
) -> AIOKafkaProducer:
    """An idempotent producer with ``acks=all``; transactional when given an id.

    ``linger_ms`` batches concurrent sends into one request: it costs a few
    milliseconds of latency and saves most of the round trips under load.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": f"{settings.kafka_client_id}-{name}",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 15000,
        "partitioner": PARTITIONER,
        "compression_type": None
        if settings.kafka_compression == "none"
        else settings.kafka_compression,
        **security_options(settings),
    }
    if transactional_id is not None:
        options["transactional_id"] = transactional_id
    options.update(overrides)
    producer = AIOKafkaProducer(**options)
    back_off_reconnects(producer.client)
    return producer


def make_consumer(
    settings: LeadflowSettings,
    *topics: str,
    name: str,
    group_id: str | None,
    **overrides: Any,
) -> AIOKafkaConsumer:
    """A consumer that commits by hand and sees only committed transactions.

    ``fetch_max_wait_ms`` is short because a read_committed fetch parked by the broker
    can sit out its whole wait after the transaction it is waiting for has committed
    (seen here with Kafka 4.1: at aiokafka's default of 500 ms, the end-to-end p99 was
    ~700 ms; at 50 ms, ~150 ms). An idle consumer pays 20 fetch requests a second for it.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": f"{settings.kafka_client_id}-{name}",
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "fetch_max_wait_ms": 50,
        **security_options(settings),
    }
    options.update(overrides)
    consumer = AIOKafkaConsumer(*topics, **options)
    back_off_reconnects(consumer._client)
    return consumer


def make_admin(settings: LeadflowSettings, *, name: str, **overrides: Any) -> AIOKafkaAdminClient:
    """An admin client (topics, groups, metadata) that connects as the services do."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": f"{settings.kafka_client_id}-{name}",
        "request_timeout_ms": 15000,
        **security_options(settings),
    }
    options.update(overrides)
    admin = AIOKafkaAdminClient(**options)
    back_off_reconnects(admin._client)
    return admin


async def poll_idle_first(
    consumer: AIOKafkaConsumer,
    transactions: Mapping[TopicPartition, asyncio.Future[Any] | None],
    *,
    max_records: int,
    timeout_ms: int = 200,
) -> Batches:
    """The next records for a consumer that has a transaction per partition on its way.

    ``transactions`` holds each owned partition's transaction on its way (``None``: none).
    aiokafka hands out one partition's buffered records until they run out, so a plain
    ``getmany`` keeps giving the partition whose transaction was just started, and its
    next batch waits for that transaction: one partition at a time. While some
    transactions are on their way, the idle partitions are asked first, without waiting,
    so the transactions of different partitions overlap. Otherwise (nothing idle has
    records yet, or nothing is committing) every assigned partition is polled as usual.
    """
    idle = [tp for tp, task in transactions.items() if task is None or task.done()]
    if idle and len(idle) < len(transactions):
        ready: Batches = await consumer.getmany(*idle, timeout_ms=0, max_records=max_records)
        if ready:
            return ready
    batches: Batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
    return batches


async def reachable(consumer: AIOKafkaConsumer, timeout: float = 2.0) -> bool:
    """Kafka answers a metadata request now: readiness, not just "it did once"."""
    try:
        async with asyncio.timeout(timeout):
            await consumer.topics()
            return True
    except (KafkaError, TimeoutError, OSError):
        return False

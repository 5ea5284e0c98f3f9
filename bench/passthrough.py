"""The raw limit of the scoring worker: consume -> produce with the same transactions, no scoring.

Run as a process (``python -m bench.passthrough``, configured by the same ``LEADFLOW_*``
variables as scoring). It mirrors :mod:`services.scoring.worker` minus the domain: one
transactional producer per assigned partition (the same ``transactional_id`` scheme), the
same poll (:func:`shared.kafka.poll_idle_first`, bounded by the same batch size), and per
partition batch ONE transaction that sends every record on (batched per output partition,
as the worker sends) and commits the offset with ``send_offsets_to_transaction``; one
transaction per partition on its way at a time, the partitions' transactions overlapping.
It logs ``took``/``released`` like the worker, so the bench sees when it holds its
partitions.

With ``BENCH_WRITTEN`` (a file of :func:`bench.worker_records.written_by_input`, what the
worker writes for each input of the bench's stream), it is the *same-records* passthrough:
per batch it writes what the worker would (:func:`bench.worker_records.transaction_of`:
the changelog records of the batch's leads and the offset marker to the input's changelog
partition, then a score update per scored input and the stage changes, of the worker's
sizes and headers) in the same one transaction, in the worker's order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from bench.worker_records import Filler, Written, transaction_of
from services.scoring.settings import ScoringSettings
from shared.kafka import (
    make_consumer,
    make_producer,
    poll_idle_first,
    send_as_batches,
    send_keyed,
)
from shared.log import configure_logging

log = logging.getLogger("bench.passthrough")


class Passthrough:
    def __init__(
        self, settings: ScoringSettings, written: dict[bytes, Written] | None = None
    ) -> None:
        self.settings = settings
        self.written = written
        self.filler = Filler()
        self.group = settings.scoring_group
        self.output = settings.topics.scores
        self.consumer = make_consumer(
            settings, name="passthrough", group_id=self.group, max_poll_interval_ms=300_000
        )
        self.producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self.committing: dict[TopicPartition, asyncio.Task[None]] = {}
        self.lock = asyncio.Lock()
        self.stopping = asyncio.Event()

    async def take(self, assigned: Iterable[TopicPartition]) -> None:
        async with self.lock:
            for tp in assigned:
                if tp in self.producers:
                    continue
                producer = make_producer(
                    self.settings,
                    name=f"passthrough-{tp.partition}",
                    transactional_id=f"{self.group}.{tp.topic}.{tp.partition}",
                )
                await producer.start()
                self.producers[tp] = producer
                log.info("took %s[%d]", tp.topic, tp.partition)

    async def release(self, revoked: Iterable[TopicPartition]) -> None:
        async with self.lock:
            for tp in list(revoked):
                producer = self.producers.pop(tp, None)
                if producer is not None:
                    await self.settled(tp)
                    await producer.stop()
                    log.info("released %s[%d]", tp.topic, tp.partition)

    async def run(self) -> None:
        self.consumer.subscribe([self.settings.topics.events], listener=_Rebalance(self))
        await self.consumer.start()
        try:
            while not self.stopping.is_set():
                batches = await poll_idle_first(
                    self.consumer,
                    {tp: self.committing.get(tp) for tp in self.producers},
                    max_records=self.settings.scoring_batch_records,
                )
                async with self.lock:
                    for tp, records in batches.items():
                        if records and tp in self.producers:
                            await self.settled(tp)
                            self.committing[tp] = asyncio.create_task(self.forward(tp, records))
        finally:
            await self.release(list(self.producers))
            await self.consumer.stop()

    async def settled(self, tp: TopicPartition) -> None:
        """The partition's transaction on its way has ended; a failure ends the run."""
        task = self.committing.pop(tp, None)
        if task is not None:
            await task

    async def forward(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        """The records on, keyed as they came, in batches per partition as the worker sends."""
        if self.written is not None:
            await self.forward_as_worker(tp, records, self.written)
            return
        producer = self.producers[tp]
        async with producer.transaction():
            deliveries = await send_keyed(
                producer, self.output, ((r.key, r.value) for r in records)
            )
            await asyncio.gather(*deliveries)
            await producer.send_offsets_to_transaction({tp: records[-1].offset + 1}, self.group)

    async def forward_as_worker(
        self, tp: TopicPartition, records: Sequence[Any], written: dict[bytes, Written]
    ) -> None:
        """The records the worker writes for ``records``, in its order, in one transaction."""
        producer, topics = self.producers[tp], self.settings.topics
        last = records[-1].offset
        transaction = transaction_of(
            ((r.key, r.value) for r in records), written, last, self.filler
        )
        async with producer.transaction():
            deliveries = await send_as_batches(
                producer, topics.scoring_state, tp.partition, transaction.changelog
            )
            deliveries += await send_keyed(producer, topics.scores, transaction.scores)
            if transaction.changes:
                deliveries += await send_keyed(producer, topics.stage_changes, transaction.changes)
            await asyncio.gather(*deliveries)
            await producer.send_offsets_to_transaction({tp: last + 1}, self.group)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, passthrough: Passthrough) -> None:
        self.passthrough = passthrough

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.passthrough.release(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.passthrough.take(assigned)


def load_written(path: str | None) -> dict[bytes, Written] | None:
    """The bench's own file of what the worker writes per input, for this run; before
    the partitions are taken, so not timed."""
    if not path:
        return None
    with open(path, "rb") as file:
        written: dict[bytes, Written] = pickle.load(file)
    return written


async def main() -> None:
    settings = ScoringSettings()
    configure_logging("passthrough", settings.log_level, settings.log_format)
    passthrough = Passthrough(settings, load_written(os.environ.get("BENCH_WRITTEN")))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, passthrough.stopping.set)
    await passthrough.run()


if __name__ == "__main__":
    asyncio.run(main())

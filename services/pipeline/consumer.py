"""The pipeline's Kafka loop: scores, stage changes and account scores into SQL, offsets
after the commit.

Records are read with read_committed, so only what scoring committed is
seen. A batch is written in one database transaction and the offsets are
committed only after it: a crash in between redelivers the batch, and the
writes are idempotent on ``(lead_id, sequence)``, so nothing counts twice.
The offset committed is the consumer's position, not the last record's offset
plus one: scoring's transactions end in a commit marker that takes an offset of
its own, and a group committed before the marker shows a lag of one forever.
While the database is down the loop retries the same batch and the service
reports not-ready; nothing is skipped.

A record that does not decode goes to ``leadflow.dead-letters`` with the reason, in the
format scoring writes (:mod:`shared.dead_letters`), and Kafka must have acknowledged it
before the batch is written and the offset past it committed: a crash in between sends it
again (dead letters are at least once), it is never lost. A null-valued record on either
topic is scoring's erasure signal, not a bad record: the lead's rows are deleted in the
batch's transaction (see :mod:`shared.erasure_signals`). Account scores are idempotent on
``(account_id, sequence)``; scoring never writes a null-valued one, so one is a dead letter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from services.pipeline import metrics
from services.pipeline.accounts_store import require_storable
from services.pipeline.settings import PipelineSettings
from services.pipeline.store import record_batch
from shared.account_events import AccountScore
from shared.consumer_lag import LagGauge, fetched_positions, position
from shared.database import Database
from shared.dead_letters import dead_letter_of
from shared.erasure_signals import (
    ErasureSignal,
    Topic,
    after_erasures,
    decode_signal,
)
from shared.events import ScoreUpdate, StageChange
from shared.kafka import Record, make_consumer, make_producer, reachable, send_keyed
from shared.retrying import STOPPED, until_written

log = logging.getLogger(__name__)

Decoded = tuple[
    list[StageChange], list[ScoreUpdate], list[ErasureSignal], list[AccountScore], list[Record]
]
"""A batch decoded: what ``record_batch`` writes, and the dead letters."""


def _account_score(value: bytes | None) -> AccountScore:
    if value is None:
        raise ValueError("a record without a value is not an account score")
    score = AccountScore.model_validate_json(value)
    require_storable(score)
    return score


class PipelineConsumer:
    def __init__(self, settings: PipelineSettings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self.topics = settings.topics
        self.consumer = make_consumer(
            settings,
            self.topics.stage_changes,
            self.topics.scores,
            self.topics.account_scores,
            name="pipeline",
            group_id=settings.pipeline_group,
        )
        self.database_ok = True
        self.started = asyncio.Event()
        self._stopping = asyncio.Event()
        self._committing: asyncio.Task[None] | None = None
        self._requested: dict[TopicPartition, int] = {}
        """The offset last handed to a commit, per partition (dropped when it failed)."""
        self._lag = LagGauge(metrics.CONSUMER_LAG)
        self._dead_letters: AIOKafkaProducer | None = None
        """Started with the loop: the producer of the records that do not decode."""

    async def run(self) -> None:
        producer = make_producer(self.settings, name="pipeline-dead-letters")
        try:
            await self.consumer.start()
            await producer.start()
            self._dead_letters = producer
            self.started.set()
            while not self._stopping.is_set():
                batches = await self.consumer.getmany(
                    timeout_ms=200, max_records=self.settings.pipeline_batch_records
                )
                if batches:
                    await self._persist(batches)
                else:
                    await self._commit_passed_markers()
                self._lag.update(self.consumer)
        finally:
            await self._committed()
            await self.consumer.stop()
            await producer.stop()

    def stop(self) -> None:
        self._stopping.set()

    async def _persist(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> None:
        changes, updates, erasures, accounts, refused = self._decode(batches)
        if refused and not await self._send_dead_letters(refused):
            return  # stopping: offsets not committed, the batch comes back next start

        async def write() -> None:
            with metrics.BATCH_SECONDS.time():
                await record_batch(
                    self.database.sessions, changes, updates, erasures, account_scores=accounts
                )

        def failed() -> None:
            self.database_ok = False

        written = await until_written(
            write,
            retry_on=(SQLAlchemyError, OSError),
            stopping=self._stopping,
            what="writing a batch",
            log=log,
            on_failure=failed,
        )
        if written is STOPPED:
            return  # offsets not committed: the batch comes back next start
        self.database_ok = True
        metrics.PERSISTED.labels("stage_change").inc(len(changes))
        metrics.PERSISTED.labels("score").inc(len(updates))
        metrics.PERSISTED.labels("erasure_signal").inc(len(erasures))
        metrics.PERSISTED.labels("account_score").inc(len(accounts))
        # The position is past the batch and past any marker the fetch has seen after it
        # (nothing else: the next records are only taken by the next getmany).
        offsets = {tp: at for tp in batches if (at := position(self.consumer, tp)) is not None}
        await self._start_commit(offsets)

    async def _commit_passed_markers(self) -> None:
        """Commit positions that moved with no record: the fetch passed only markers.

        A transaction's marker can come in a fetch of its own, after its records were
        persisted and committed; every record before the position is in the database, so
        committing it at once keeps the commit order.
        """
        positions = fetched_positions(self.consumer)
        advanced = {tp: at for tp, at in positions.items() if at > self._requested.get(tp, -1)}
        if advanced:
            await self._start_commit(advanced)

    async def _start_commit(self, offsets: dict[TopicPartition, int]) -> None:
        # The commit's round trip overlaps the next fetch; commits stay one at a time, in
        # order, and each only after its batch's database commit.
        await self._committed()
        self._requested.update(offsets)
        self._committing = asyncio.create_task(self._commit(offsets))

    async def _committed(self) -> None:
        task, self._committing = self._committing, None
        if task is not None:
            await task

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # a rebalance took the partitions: their new owner re-reads, idempotently
            log.warning("committing offsets failed (%s); records will be re-read", exc)
            for tp, offset in offsets.items():
                if self._requested.get(tp) == offset:
                    del self._requested[tp]  # still ours after all: committed again when idle

    async def _send_dead_letters(self, letters: Sequence[Record]) -> bool:
        """Send the batch's dead letters and wait until Kafka has them all, retrying while
        it does not; ``False`` if the service stops first."""
        producer = self._dead_letters
        assert producer is not None  # started before the first poll

        async def send() -> None:
            await asyncio.gather(*await send_keyed(producer, self.topics.dead_letters, letters))

        sent = await until_written(
            send,
            retry_on=(KafkaError, OSError),
            stopping=self._stopping,
            what="sending dead letters",
            log=log,
        )
        return sent is not STOPPED

    def _decode(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> Decoded:
        changes: list[StageChange] = []
        updates: list[ScoreUpdate] = []
        erasures: list[ErasureSignal] = []
        accounts: list[AccountScore] = []
        refused: list[Record] = []
        for tp, records in batches.items():
            of_accounts = tp.topic == self.topics.account_scores
            for record in records if of_accounts else after_erasures(records):
                try:
                    if of_accounts:
                        accounts.append(_account_score(record.value))
                    elif record.value is None:
                        erasures.append(decode_signal(self._kind(tp), record.key, record.headers))
                    elif tp.topic == self.topics.stage_changes:
                        changes.append(StageChange.model_validate_json(record.value))
                    else:
                        updates.append(ScoreUpdate.model_validate_json(record.value))
                except (ValidationError, TypeError, ValueError) as exc:
                    metrics.INVALID.inc()
                    reason = f"{type(exc).__name__}: {exc}"
                    log.error("dead letter %s@%d: %s", tp, record.offset, reason)
                    refused.append(dead_letter_of(record, reason))
        return changes, updates, erasures, accounts, refused

    def _kind(self, tp: TopicPartition) -> Topic:
        return "stage_changes" if tp.topic == self.topics.stage_changes else "scores"

    async def kafka_reachable(self) -> bool:
        return await reachable(self.consumer)

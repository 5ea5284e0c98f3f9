"""The account stage: contributions into account roll-ups, exactly once (docs §5.10).

A consumer loop of its own, in its own group, over ``leadflow.account-contributions``
(keyed by account id, written by the lead stage in its transactions). It follows the lead
stage's recipe (§5.2) on a smaller scale: per assigned partition *p*, a transactional
producer whose id is derived from the group, the topic and *p* (initialising it fences the
previous owner), the partition's account states restored from ``leadflow.account-state``
partition *p*, and one transaction per batch holding the score updates, the changed
states with the offset marker, dead letters and the input offsets. A failed transaction
drops the partition's states and takes the partition again from its changelog, so a
contribution is folded into what is committed exactly once.

A batch's transaction is awaited before the next batch of the partition is folded: the
account stage sees one record per lead per batch of the lead stage, far fewer than
events, so the lead stage's pipelining is not worth its complexity here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from services.scoring import metrics
from services.scoring.account_batch import AccountBatchResult, fold_batch
from services.scoring.account_records import account_record, read_account
from services.scoring.changelog import read_to_end
from services.scoring.model import ScoringModel
from services.scoring.rollup import AccountState
from services.scoring.settings import ScoringSettings
from services.scoring.state_records import (
    APPLIED_OFFSET_KEY,
    applied_offset_record,
    read_applied_offset,
)
from shared.consumer_lag import position
from shared.dead_letters import dead_letter_of
from shared.kafka import (
    CompactedRecord,
    Record,
    make_consumer,
    make_producer,
    reachable,
    send_as_batches,
    send_keyed,
)
from shared.topic_admin import check_copartitioned

log = logging.getLogger(__name__)


@dataclass
class AccountPartition:
    """One contributions partition: its accounts, and the producer that is its fence."""

    tp: TopicPartition
    producer: AIOKafkaProducer
    accounts: dict[str, AccountState] = field(default_factory=dict)
    applied_offset: int = -1


@dataclass
class RestoredAccounts:
    """A changelog partition read back: the newest state of each account, the marker."""

    accounts: dict[str, AccountState] = field(default_factory=dict)
    applied_offset: int = -1

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if key == APPLIED_OFFSET_KEY:
            if value is not None:
                self.applied_offset = read_applied_offset(value)
        elif value is None:
            self.accounts.pop(key.decode(), None)
        else:
            self.accounts[key.decode()] = read_account(orjson.loads(value))


class AccountWorker:
    def __init__(self, settings: ScoringSettings, model: ScoringModel) -> None:
        self.settings = settings
        self.model = model
        self.topics = settings.topics
        self.group = settings.scoring_accounts_group
        self.consumer = make_consumer(
            settings, name="accounts", group_id=self.group, max_poll_interval_ms=300_000
        )
        self.partitions: dict[TopicPartition, AccountPartition] = {}
        self._lock = asyncio.Lock()
        self._broken: set[TopicPartition] = set()
        self._retry_at = 0.0
        self._stopping = asyncio.Event()
        self.started = asyncio.Event()

    async def run(self) -> None:
        """Consume until :meth:`stop`; releases every partition on the way out."""
        topics = self.topics
        try:
            await check_copartitioned(
                self.settings,
                topics.account_contributions,
                topics.account_state,
                "the account stage keeps the accounts of contributions partition p in "
                "changelog partition p",
            )
            self.consumer.subscribe([topics.account_contributions], listener=_Rebalance(self))
            await self.consumer.start()
            self.started.set()
            while not self._stopping.is_set():
                await self._retry_broken()
                batches = await self.consumer.getmany(
                    timeout_ms=200, max_records=self.settings.scoring_batch_records
                )
                async with self._lock:
                    for tp, records in batches.items():
                        partition = self.partitions.get(tp)  # None: revoked or broken since
                        if partition is not None:
                            await self._process(partition, records)
        finally:
            async with self._lock:
                await self._release(list(self.partitions))
            await self.consumer.stop()

    def stop(self) -> None:
        self._stopping.set()

    async def kafka_reachable(self) -> bool:
        return await reachable(self.consumer)

    # --- partitions come and go -------------------------------------------------

    async def take(self, assigned: Iterable[TopicPartition]) -> None:
        async with self._lock:
            for tp in assigned:
                if tp not in self.partitions:
                    await self._take_or_defer(tp)

    async def release(self, revoked: Iterable[TopicPartition]) -> None:
        async with self._lock:
            revoked = list(revoked)
            self._broken.difference_update(revoked)
            await self._release(revoked)

    async def _take_or_defer(self, tp: TopicPartition) -> None:
        try:
            await self._take(tp)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("cannot take %s yet (%r); will retry", tp, exc)
            self._broken.add(tp)
            self.consumer.pause(tp)
        else:
            self._broken.discard(tp)
            self.consumer.resume(tp)

    async def _retry_broken(self) -> None:
        if not self._broken or time.monotonic() < self._retry_at:
            return
        async with self._lock:
            assigned = self.consumer.assignment()
            for tp in list(self._broken):
                if tp in assigned:
                    await self._take_or_defer(tp)
                else:
                    self._broken.discard(tp)
        self._retry_at = time.monotonic() + 1.0

    async def _take(self, tp: TopicPartition) -> None:
        """Fence the previous owner, restore the accounts, resume after the last applied."""
        producer = make_producer(
            self.settings,
            name=f"accounts-{tp.partition}",
            transactional_id=f"{self.group}.{tp.topic}.{tp.partition}",
        )
        restored = RestoredAccounts()
        try:
            await producer.start()  # InitProducerId: aborts and fences the old owner
            with metrics.RESTORE_SECONDS.time():
                await read_to_end(
                    self.settings,
                    self.topics.account_state,
                    tp.partition,
                    restored.apply,
                )
        except BaseException:
            await _close_quietly(producer)
            raise
        if restored.applied_offset >= 0:
            self.consumer.seek(tp, restored.applied_offset + 1)
        else:
            await self.consumer.seek_to_beginning(tp)
        self.partitions[tp] = AccountPartition(
            tp, producer, restored.accounts, restored.applied_offset
        )
        log.info(
            "took %s[%d]: %d accounts, resuming after offset %d",
            tp.topic,
            tp.partition,
            len(restored.accounts),
            restored.applied_offset,
        )

    async def _release(self, revoked: Iterable[TopicPartition]) -> None:
        for tp in list(revoked):
            partition = self.partitions.pop(tp, None)
            if partition is not None:
                await _close_quietly(partition.producer)
                log.info("released %s[%d]", tp.topic, tp.partition)

    # --- folding ------------------------------------------------------------------

    async def _process(self, partition: AccountPartition, records: Sequence[Any]) -> None:
        result = fold_batch(
            records, partition.accounts, self.model, applied_offset=partition.applied_offset
        )
        metrics.ACCOUNT_CONTRIBUTIONS.labels("replayed").inc(result.replayed)
        if result.applied_offset <= partition.applied_offset:
            return
        try:
            await self._transaction(partition, result)
        except (KafkaError, OSError, TimeoutError) as exc:
            # the states were changed in place: drop them and take the partition again
            log.warning("transaction on %s failed (%r); restoring the partition", partition.tp, exc)
            if self.partitions.get(partition.tp) is partition:
                self.consumer.pause(partition.tp)
                del self.partitions[partition.tp]
                await _close_quietly(partition.producer)
                self._broken.add(partition.tp)
            return
        partition.applied_offset = result.applied_offset
        metrics.ACCOUNT_CONTRIBUTIONS.labels("folded").inc(
            len(records) - result.replayed - len(result.refused)
        )
        metrics.ACCOUNT_CONTRIBUTIONS.labels("dead_letter").inc(len(result.refused))
        metrics.DEAD_LETTERS.inc(len(result.refused))
        metrics.ACCOUNT_UPDATES.inc(len(result.scores))

    async def _transaction(self, partition: AccountPartition, result: AccountBatchResult) -> None:
        """Score updates, dead letters, the changed states with the marker, the offsets."""
        topics, producer, tp = self.topics, partition.producer, partition.tp
        scores: list[Record] = [
            (score.account_id.encode(), score.model_dump_json().encode()) for score in result.scores
        ]
        letters = [self._dead_letter(record, reason) for record, reason in result.refused]
        changelog: list[CompactedRecord] = [
            (account_id.encode(), account_record(state))
            for account_id, state in result.accounts.items()
        ]
        changelog.append((APPLIED_OFFSET_KEY, applied_offset_record(result.applied_offset)))
        # past the batch and past any transaction marker the fetch saw after it (§5.4)
        at = position(self.consumer, tp)
        next_offset = max(result.applied_offset + 1, at if at is not None else 0)
        async with producer.transaction():
            deliveries = await send_as_batches(
                producer, topics.account_state, tp.partition, changelog
            )
            deliveries += await send_keyed(producer, topics.account_scores, scores)
            deliveries += await send_keyed(producer, topics.dead_letters, letters)
            for delivery in deliveries:
                await delivery
            await producer.send_offsets_to_transaction({tp: next_offset}, self.group)

    @staticmethod
    def _dead_letter(record: Any, reason: str) -> Record:
        log.warning(
            "dead letter %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason
        )
        return dead_letter_of(record, reason)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: AccountWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.worker.release(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.worker.take(assigned)


async def _close_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await producer.stop()
    except KafkaError as exc:
        log.debug("closing a producer: %r", exc)

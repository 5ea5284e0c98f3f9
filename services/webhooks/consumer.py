"""The webhooks service's Kafka loop: stage changes, lead and account scores into messages,
then offsets.

Read with read_committed, so only what scoring committed becomes a webhook. A
batch's messages are stored in one database transaction and the offsets are
committed only after it: killed in between, the service reads the batch again,
and the messages' unique ``(endpoint, webhook id)`` makes that change nothing.
While the database is down the loop retries the same batch; nothing is skipped.
As in the pipeline, the offset committed is the consumer's position, past any
transaction marker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from services.webhooks import metrics
from services.webhooks.settings import WebhooksSettings
from services.webhooks.store import Handover, record_batch
from shared.account_events import AccountScore
from shared.consumer_lag import LagGauge, fetched_positions, position
from shared.database import Database
from shared.erasure_signals import Topic, after_erasures, decode_signal
from shared.events import ScoreUpdate, StageChange
from shared.kafka import make_consumer, reachable
from shared.retrying import STOPPED, until_written

log = logging.getLogger(__name__)


class Deliveries(Protocol):
    """The deliverer, as the consumer sees it (:class:`~services.webhooks.delivery.Deliverer`)."""

    def handover(self) -> Handover | None: ...

    def accept(self, handover: Handover) -> None: ...

    def wake(self) -> None: ...


class WebhooksConsumer:
    def __init__(
        self,
        settings: WebhooksSettings,
        database: Database,
        clock: Callable[[], Any],
        deliverer: Deliveries | None,
    ) -> None:
        """``deliverer``: this process's, when it delivers: the messages of a batch go to
        it leased where it has room, and it is woken for the others."""
        self.settings = settings
        self.database = database
        self.clock = clock
        self.deliverer = deliverer
        self.topics = settings.topics
        self.consumer = make_consumer(
            settings,
            self.topics.stage_changes,
            self.topics.scores,
            self.topics.account_scores,
            name="webhooks",
            group_id=settings.webhooks_group,
        )
        self.database_ok = True
        self.started = asyncio.Event()
        self._stopping = asyncio.Event()
        self._committed: dict[TopicPartition, int] = {}
        self._lag = LagGauge(metrics.CONSUMER_LAG)

    async def run(self) -> None:
        await self.consumer.start()
        self.started.set()
        try:
            while not self._stopping.is_set():
                batches = await self.consumer.getmany(
                    timeout_ms=200, max_records=self.settings.webhooks_batch_records
                )
                if batches:
                    if not await self._persist(batches):
                        return
                    offsets = {
                        tp: at for tp in batches if (at := position(self.consumer, tp)) is not None
                    }
                else:
                    offsets = {
                        tp: at
                        for tp, at in fetched_positions(self.consumer).items()
                        if at > self._committed.get(tp, -1)
                    }
                if offsets:
                    await self._commit(offsets)
                self._lag.update(self.consumer)
        finally:
            await self.consumer.stop()

    def stop(self) -> None:
        self._stopping.set()

    async def _persist(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> bool:
        """True once stored; False when stopping first (the batch comes back next start)."""
        changes, updates, erased, accounts = self._decode(batches)

        def failed() -> None:
            self.database_ok = False

        handover: Handover | None = None

        async def write() -> int:
            # asked again on every attempt: after an outage, the room and the lease of the
            # first attempt are stale
            nonlocal handover
            handover = None if self.deliverer is None else self.deliverer.handover()
            return await record_batch(
                self.database.sessions, changes, updates, self.clock(), erased, accounts, handover
            )

        count = await until_written(
            write,
            retry_on=(SQLAlchemyError, OSError),
            stopping=self._stopping,
            what="storing messages",
            log=log,
            on_failure=failed,
        )
        if count is STOPPED:
            return False
        self.database_ok = True
        if self.deliverer is not None and count:
            if handover is not None and handover.taken:
                self.deliverer.accept(handover)
            if handover is None or count > len(handover.taken):
                self.deliverer.wake()
        return True

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(offsets)
            self._committed.update(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # a rebalance took the partitions: their new owner re-reads, idempotently
            log.warning("committing offsets failed (%s); records will be re-read", exc)

    def _decode(
        self, batches: Mapping[TopicPartition, Sequence[Any]]
    ) -> tuple[list[StageChange], list[ScoreUpdate], set[str], list[AccountScore]]:
        """The records, and the leads erased (null-valued records: scoring's erasure
        signals). Records a later signal of their lead supersedes are dropped unread.
        Account scores have no erasure signals (scoring writes no account tombstone)."""
        changes: list[StageChange] = []
        updates: list[ScoreUpdate] = []
        erased: set[str] = set()
        accounts: list[AccountScore] = []
        for tp, records in batches.items():
            if tp.topic == self.topics.account_scores:
                accounts.extend(self._accounts(tp, records))
                continue
            kind: Topic = "stage_changes" if tp.topic == self.topics.stage_changes else "scores"
            for record in after_erasures(records):
                try:
                    if record.value is None:
                        erased.add(decode_signal(kind, record.key, record.headers).lead_id)
                    elif kind == "stage_changes":
                        changes.append(StageChange.model_validate_json(record.value))
                    else:
                        updates.append(ScoreUpdate.model_validate_json(record.value))
                except (ValidationError, TypeError, ValueError) as exc:
                    metrics.INVALID.inc()
                    log.error("skipping invalid record %s@%d: %s", tp, record.offset, exc)
        return changes, updates, erased, accounts

    @staticmethod
    def _accounts(tp: TopicPartition, records: Sequence[Any]) -> list[AccountScore]:
        scores = []
        for record in records:
            try:
                if record.value is None:
                    raise ValueError("an account score without a value")
                scores.append(AccountScore.model_validate_json(record.value))
            except (ValidationError, TypeError, ValueError) as exc:
                metrics.INVALID.inc()
                log.error("skipping invalid record %s@%d: %s", tp, record.offset, exc)
        return scores

    async def kafka_reachable(self) -> bool:
        return await reachable(self.consumer)

"""The scoring worker: consume events, score them, emit outputs, exactly once.

Per assigned input partition the worker owns a state (restored from the
changelog) and a transactional producer whose ``transactional_id`` is derived
from the group, the topic and the partition. Initialising that producer
aborts the previous owner's open transaction and fences it, which is how
zombies are stopped without KIP-447 (aiokafka sends TxnOffsetCommit v0).
Each batch of a partition is one transaction: outputs, dead letters, the
changelog and the consumer offset commit or vanish together. A partition has one
transaction on its way at a time, and its next batch is scored meanwhile: states
change in place, so a failed transaction drops the partition's whole state (and what
was scored on top of it) and restores it from the changelog. Partitions with no
transaction on their way are polled first, so the transactions of different partitions
overlap too.

An erase record (``lead.erased``) drops the lead's state and, in its partition's
transaction, writes tombstones for the lead's key to the changelog, to the scores and
to the stage changes (the last two carry the erase id: they tell the pipeline). They go
first in the transaction, and the lead's records scored earlier in the batch are not sent
at all, so what the batch scores for the same id after the erasure is a new lead.

Identity merges (docs/architecture.md §5.12) write to ``leadflow.events`` itself, in the
same transaction: the merge records and forwarded events a batch produces, keyed by the
known lead, beside the anonymous lead's tombstone and alias marker in the changelog.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from services.scoring import changelog, metrics
from services.scoring.account_contributions import contribute
from services.scoring.batch import BatchResult, BatchScoring, Refused
from services.scoring.changelog import PartitionState
from services.scoring.event_history import read_until
from services.scoring.heap import HeapFreezer
from services.scoring.identity import FORWARDED_FROM_HEADER, Follow, alias_key, alias_record
from services.scoring.membership import load_free_mail_domains
from services.scoring.model import ScoringModel
from services.scoring.model_topic import find_publication
from services.scoring.publication import Switch, switch_of
from services.scoring.replay import Replay
from services.scoring.scoring import NewScore
from services.scoring.settings import ScoringSettings
from services.scoring.state_records import (
    APPLIED_OFFSET_KEY,
    LIVE_MODEL_KEY,
    applied_offset_record,
    lead_record,
    live_model_record,
)
from services.scoring.switch import SwitchPlan, plan_switch
from shared.cloudevents import kafka_headers
from shared.consumer_lag import LagGauge
from shared.dead_letters import dead_letter_of
from shared.events import (
    ERASE_ID_HEADER,
    ERASE_REQUESTED_AT_HEADER,
    Event,
    StageChange,
    format_time,
)
from shared.kafka import (
    CompactedRecord,
    HeadedRecord,
    Record,
    encode_key,
    make_consumer,
    make_producer,
    poll_idle_first,
    reachable,
    send_as_batches,
    send_keyed,
)
from shared.topic_admin import check_partitions

log = logging.getLogger(__name__)

YIELD_EVERY = 50
"""Records scored between two turns of the event loop (a few milliseconds of work)."""

LEGACY_PER_BATCH = 1000
"""Leads restored from an old changelog format written again per batch (docs §5.3): enough
to convert a partition soon, few enough to keep each transaction small."""


@dataclass
class PartitionScorer:
    """One input partition: its state, and the producer that is its fence."""

    tp: TopicPartition
    producer: AIOKafkaProducer
    state: PartitionState
    scored_offset: int = -1
    """The last input offset scored into ``state``; ahead of ``state.applied_offset`` (the
    last committed) while a transaction is on its way."""
    committing: asyncio.Task[None] | None = None
    """The transaction of the previous batch, running while the next one is scored."""
    model: ScoringModel | None = None
    """The model the partition scores under (its last model switch); ``None``: the worker's."""


@dataclass(frozen=True, slots=True)
class Erasure:
    """One erase record scored: the lead's key, and the headers its signals carry."""

    key: bytes
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, event: Event) -> Erasure:
        requested_at = format_time(event.occurred_at).encode()
        return cls(
            encode_key(event.lead_id),
            ((ERASE_ID_HEADER, event.event_id.encode()), (ERASE_REQUESTED_AT_HEADER, requested_at)),
        )


@dataclass
class ScoredBatch:
    """What one batch of one partition produces, encoded, before it is committed."""

    outputs: dict[str, list[Record | HeadedRecord]] = field(default_factory=dict)
    """Per topic (scores, stage changes, dead letters), in order."""
    changelog: list[CompactedRecord] = field(default_factory=list)
    erasures: list[Erasure] = field(default_factory=list)
    """Erase records scored, in order: their tombstones go first in the transaction."""
    applied_offset: int = -1
    rewritten: tuple[str, ...] = ()
    """Leads restored in an old format that this batch writes again in the current one."""

    def emit(self, topic: str, record: Record | HeadedRecord) -> None:
        self.outputs.setdefault(topic, []).append(record)

    def emit_score(self, topic: str, key: bytes, score: NewScore) -> None:
        """A score update, as a binary-mode CloudEvent of the Kafka binding."""
        self.emit(topic, (key, score.to_json(), kafka_headers(score)))

    def emit_change(self, topic: str, key: bytes, change: StageChange) -> None:
        """A stage change, as a binary-mode CloudEvent of the Kafka binding."""
        self.emit(topic, (key, change.model_dump_json().encode(), kafka_headers(change)))


class ScoringWorker:
    def __init__(self, settings: ScoringSettings, model: ScoringModel) -> None:
        self.settings = settings
        self.model = model
        self.topics = settings.topics
        self.horizon = timedelta(days=settings.dedup_horizon_days)
        self.consumer = make_consumer(
            settings, name="scoring", group_id=settings.scoring_group, max_poll_interval_ms=300_000
        )
        self.partitions: dict[TopicPartition, PartitionScorer] = {}
        self._published: dict[str, ScoringModel] = {model.version: model}
        self._lock = asyncio.Lock()
        self._broken: set[TopicPartition] = set()
        self._retry_at = 0.0
        self._stopping = asyncio.Event()
        self.started = asyncio.Event()
        self.lag = LagGauge(metrics.CONSUMER_LAG)
        self.heap = HeapFreezer(
            settings.scoring_gc_freeze_seconds, settings.scoring_gc_collect_seconds
        )
        self.free_mail = load_free_mail_domains()

    async def run(self) -> None:
        """Consume until :meth:`stop`; releases every partition on the way out."""
        try:
            await check_partitions(self.settings)
            self.consumer.subscribe([self.topics.events], listener=_Rebalance(self))
            await self.consumer.start()
            self.started.set()
            while not self._stopping.is_set():
                await self._retry_broken()
                batches = await poll_idle_first(
                    self.consumer,
                    {tp: scorer.committing for tp, scorer in self.partitions.items()},
                    max_records=self.settings.scoring_batch_records,
                )
                async with self._lock:
                    for tp, records in batches.items():
                        scorer = self.partitions.get(tp)  # None: revoked or broken since
                        if scorer is not None:
                            await self._process(scorer, records)
                self.heap.tick()
                self.lag.update(self.consumer)
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
            self.heap.settle()  # once per rebalance: aiokafka calls this after every one

    async def release(self, revoked: Iterable[TopicPartition]) -> None:
        async with self._lock:
            revoked = list(revoked)
            self._broken.difference_update(revoked)
            await self._release(revoked)

    async def _take_or_defer(self, tp: TopicPartition) -> None:
        """Take ``tp``; if Kafka fails us now, pause it and try again later."""
        try:
            await self._take(tp)
        except (KafkaError, OSError, TimeoutError, LookupError) as exc:
            log.warning("cannot take %s yet (%r); will retry", tp, exc)
            self._broken.add(tp)
            self.consumer.pause(tp)
        else:
            self._broken.discard(tp)
            self.consumer.resume(tp)

    async def _retry_broken(self) -> None:
        """Partitions whose transaction failed (e.g. the broker restarted) are taken again."""
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
        """Fence the previous owner, restore the state, resume after the last applied offset."""
        group, topic = self.settings.scoring_group, tp.topic
        producer = make_producer(
            self.settings,
            name=f"scoring-{tp.partition}",
            transactional_id=f"{group}.{topic}.{tp.partition}",
        )
        try:
            await producer.start()  # InitProducerId: aborts and fences the old owner
            with metrics.RESTORE_SECONDS.time():
                state = await changelog.restore(
                    self.settings, tp.partition, legacy_ids=self.model.rulebook.engagement_ids
                )
            model = await self._live_model(state.model_version)
        except BaseException:
            await _close_quietly(producer)
            raise
        # every transaction records its offset, so no state means nothing was ever applied
        if state.applied_offset >= 0:
            self.consumer.seek(tp, state.applied_offset + 1)
        else:
            await self.consumer.seek_to_beginning(tp)
        self.partitions[tp] = PartitionScorer(
            tp, producer, state, state.applied_offset, model=model
        )
        log.info(
            "took %s[%d]: %d leads, resuming after offset %d, model %s",
            topic,
            tp.partition,
            len(state.leads),
            state.applied_offset,
            model.version,
        )

    async def _release(self, revoked: Iterable[TopicPartition]) -> None:
        for tp in list(revoked):
            scorer = self.partitions.pop(tp, None)
            if scorer is not None:
                await self._settled(scorer)  # a transaction on its way ends first
                await _close_quietly(scorer.producer)
                log.info("released %s[%d]", tp.topic, tp.partition)

    # --- scoring ----------------------------------------------------------------

    async def _process(self, scorer: PartitionScorer, records: Sequence[Any]) -> None:
        """Score a batch while the previous one commits, then start its own transaction.

        One transaction at a time per partition (its producer allows no more), in offset
        order; scoring, the CPU-bound part, overlaps the round trips of the commit before.
        """
        if _has_switch(records, after=scorer.scored_offset):
            await self._process_switching(scorer, records)
            return
        batch = await self._score(scorer, records)
        if not await self._settled(scorer):
            return  # the partition is being restored: this batch is scored again from there
        if batch.applied_offset > scorer.state.applied_offset:
            scorer.committing = asyncio.create_task(self._commit(scorer, batch))
        else:  # nothing new to commit: the old-format leads wait for the next batch
            scorer.state.legacy.update(batch.rewritten)

    async def _settled(self, scorer: PartitionScorer) -> bool:
        """Wait for the partition's transaction on its way; ``False`` if it failed."""
        task, scorer.committing = scorer.committing, None
        if task is None:
            return True
        try:
            await task
        except (KafkaError, OSError, TimeoutError) as exc:
            # Aborted, or unknown: drop the in-memory state (and whatever was scored on top
            # of it) and take the partition again from the changelog. Fenced means another
            # worker took it: our membership is stale, the coming rebalance revokes it from
            # us (and removes it from the retry set).
            log.warning("transaction on %s failed (%r); restoring the partition", scorer.tp, exc)
            await self._restore_later(scorer)
            return False
        return True

    async def _restore_later(self, scorer: PartitionScorer) -> None:
        """Drop the partition's in-memory state; it is taken again from the changelog."""
        if self.partitions.get(scorer.tp) is scorer:
            self.consumer.pause(scorer.tp)
            del self.partitions[scorer.tp]
            await _close_quietly(scorer.producer)
            self._broken.add(scorer.tp)

    async def _score(self, scorer: PartitionScorer, records: Sequence[Any]) -> ScoredBatch:
        """The outputs and new states of a batch, encoded, nothing written yet.

        The pure batch scoring (:mod:`services.scoring.batch`) changes the states in place:
        when a transaction fails, :meth:`_settled` throws the whole partition state away and
        restores it from the changelog, so no half-committed state is ever used. Every
        record, the changelog's included, is encoded here, before the next batch can change
        the states again. Every :data:`YIELD_EVERY` records the event loop gets a turn, so
        the previous batch's transaction moves on through its round trips meanwhile.
        """
        legacy = list(itertools.islice(scorer.state.legacy, LEGACY_PER_BATCH))
        scorer.state.legacy.difference_update(legacy)
        scoring = BatchScoring(
            scorer.model or self.model,
            scorer.state.leads,
            applied_offset=scorer.scored_offset,
            horizon=self.horizon,
            rewrite=legacy,  # restored from formats 1 and 2: written again in format 3
            aliases=scorer.state.aliases,
        )
        for index, record in enumerate(records, 1):
            if index % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            scoring.add(record)
        result = scoring.finish()
        scorer.scored_offset = result.applied_offset
        self._count(result)
        batch = self._encode(result)
        self._add_account_outputs(scorer, result, batch)
        batch.rewritten = tuple(legacy)
        return batch

    def _add_account_outputs(
        self, scorer: PartitionScorer, result: BatchResult, batch: ScoredBatch
    ) -> None:
        """What the batch contributes to accounts, and the memberships it changed, go into
        the batch's transaction (docs/architecture.md §5.10)."""
        accounts = contribute(result, scorer.state.memberships, self.model, self.free_mail)
        for record in accounts.contributions:
            batch.emit(self.topics.account_contributions, record)
        batch.changelog[-1:-1] = accounts.changelog  # the offset marker stays last

    def _encode(self, result: BatchResult) -> ScoredBatch:
        topics = self.topics
        batch = ScoredBatch(applied_offset=result.applied_offset)
        batch.erasures = [Erasure.of(event) for event in result.erased]
        for scored in result.scored:
            batch.emit_score(topics.scores, scored.key, scored.score)
            if scored.stage_change is not None:
                batch.emit_change(topics.stage_changes, scored.key, scored.stage_change)
        for refused in result.refused:
            batch.emit(topics.dead_letters, self._dead_letter(refused))
        for out in result.outgoing:  # in order: a merge before the events that follow it
            if isinstance(out, Follow):
                origin = [(FORWARDED_FROM_HEADER, out.merged_from.encode())]
                key = encode_key(out.event.lead_id)
                batch.emit(topics.events, (key, out.event.to_json(), origin))
            else:
                batch.emit(topics.events, (encode_key(out.lead_id), out.to_json()))
        batch.changelog = [
            *((encode_key(lead_id), lead_record(state)) for lead_id, state in result.leads.items()),
            *(
                (encode_key(event.lead_id), None)
                for event in result.retired
                if event.lead_id not in result.leads  # erased and seen anew since
            ),
            *((alias_key(a), alias_record(*target)) for a, target in result.aliases.items()),
            *((alias_key(anonymous), None) for anonymous in result.unaliased),
            (APPLIED_OFFSET_KEY, applied_offset_record(result.applied_offset)),
        ]
        return batch

    @staticmethod
    def _count(result: BatchResult) -> None:
        events = metrics.EVENTS
        events.labels("scored").inc(len(result.scored))
        events.labels("duplicate").inc(result.duplicates)
        events.labels("replayed").inc(result.replayed)
        events.labels("erased").inc(len(result.erased))
        events.labels("merged").inc(len(result.retired))
        events.labels("forwarded").inc(sum(isinstance(o, Follow) for o in result.outgoing))
        events.labels("dead_letter").inc(len(result.refused))
        metrics.DEAD_LETTERS.inc(len(result.refused))
        for scored in result.scored:
            if scored.stage_change is not None:
                metrics.STAGE_CHANGES.labels(scored.stage_change.to_stage.value).inc()

    @staticmethod
    def _dead_letter(refused: Refused) -> Record:
        record = refused.record
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        log.warning("dead letter %s: %s", where, refused.reason)
        return dead_letter_of(record, refused.reason)

    async def _commit(self, scorer: PartitionScorer, batch: ScoredBatch) -> None:
        """One transaction: outputs, changelog, offsets. All of it, or none of it."""
        with metrics.TRANSACTION_SECONDS.time():
            await self._transaction(scorer, batch)
        scorer.state.applied_offset = batch.applied_offset
        self._report_lag(scorer.tp, batch.applied_offset)

    async def _transaction(self, scorer: PartitionScorer, batch: ScoredBatch) -> None:
        producer = scorer.producer
        async with producer.transaction():
            # the state of input partition p goes to changelog partition p, whatever the
            # keys hash to
            changelog_partition = scorer.tp.partition
            deliveries = await self._send_erasures(producer, changelog_partition, batch.erasures)
            deliveries += await send_as_batches(
                producer, self.topics.scoring_state, changelog_partition, batch.changelog
            )
            for topic, records in batch.outputs.items():
                deliveries += await send_keyed(producer, topic, records)
            await asyncio.gather(*deliveries)
            await producer.send_offsets_to_transaction(
                {scorer.tp: batch.applied_offset + 1}, self.settings.scoring_group
            )

    async def _send_erasures(
        self, producer: AIOKafkaProducer, changelog_partition: int, erasures: list[Erasure]
    ) -> list[asyncio.Future[Any]]:
        """The tombstones of the batch's erasures, sent before anything else of it: the
        producer keeps each partition's records in the order they are handed over."""
        deliveries: list[asyncio.Future[Any]] = []
        for erasure in erasures:
            deliveries.append(
                await producer.send(
                    self.topics.scoring_state, None, key=erasure.key, partition=changelog_partition
                )
            )
            for topic in (self.topics.scores, self.topics.stage_changes):
                deliveries.append(
                    await producer.send(topic, None, key=erasure.key, headers=list(erasure.headers))
                )
        return deliveries

    def _report_lag(self, tp: TopicPartition, applied: int) -> None:
        end = self.consumer.last_stable_offset(tp) or self.consumer.highwater(tp)
        if end is not None:
            metrics.LAG.labels(str(tp.partition)).set(max(0, end - applied - 1))

    # --- model switches (docs/architecture.md §5.9) ---------------------------------

    async def _live_model(self, version: str | None) -> ScoringModel:
        """The model a partition's changelog says it scores under: the worker's own when it
        names none, else the version's document as ``leadflow.models`` holds it."""
        if version is None:
            return self.model
        model = self._published.get(version)
        if model is None:
            publication = await find_publication(self.settings, version)
            if publication is None:
                raise LookupError(f"model {version} is not in {self.topics.models}")
            model = self._published[version] = publication.scoring_model()
        return model

    async def _process_switching(self, scorer: PartitionScorer, records: Sequence[Any]) -> None:
        """The records before each switch record under the partition's model, the switch
        (its own transaction, once the previous one has committed), the rest under the
        new model."""
        start = 0
        for index, record in enumerate(records):
            switch = switch_of(record)
            if switch is None or record.offset <= scorer.scored_offset:
                continue
            if index > start:
                await self._process(scorer, records[start:index])
            start = index + 1
            if self.partitions.get(scorer.tp) is not scorer or not await self._settled(scorer):
                return  # being restored: the switch is met again after the changelog's offset
            await self._switch(scorer, switch, record.offset)
            if self.partitions.get(scorer.tp) is not scorer:
                return
        if start < len(records):
            await self._process(scorer, records[start:])

    async def _switch(self, scorer: PartitionScorer, switch: Switch, offset: int) -> None:
        """Rescore the partition under the switch's model: replay its records before the
        switch (the pure batch code, in memory), and commit the new scores, the stage
        changes, the new states, the partition's new model and the switch's offset in one
        transaction. A crash before the commit meets the same switch again, on the same
        states: the same outputs."""
        current = scorer.model or self.model
        try:
            if switch.version == current.version:  # published again: only the offset moves
                batch = ScoredBatch(applied_offset=offset)
                batch.changelog = [(APPLIED_OFFSET_KEY, applied_offset_record(offset))]
                model = current
            else:
                model = await self._live_model(switch.version)
                plan = await self._replay_partition(scorer, model, switch, offset)
                batch = self._encode_switch(plan, switch, offset)
                scorer.state.leads.clear()
                scorer.state.leads.update(plan.leads)
                log.info(
                    "%s[%d] switches from model %s to %s at offset %d: %d leads rescored,"
                    " %d stage changes, %d without events to replay",
                    scorer.tp.topic,
                    scorer.tp.partition,
                    current.version,
                    model.version,
                    offset,
                    len(plan.scores),
                    len(plan.stage_changes),
                    len(plan.not_rescored),
                )
        except (KafkaError, OSError, TimeoutError, LookupError) as exc:
            log.warning("cannot switch %s yet (%r); restoring the partition", scorer.tp, exc)
            await self._restore_later(scorer)
            return
        scorer.model = model
        scorer.scored_offset = offset
        scorer.committing = asyncio.create_task(self._commit(scorer, batch))
        await self._settled(scorer)

    async def _replay_partition(
        self, scorer: PartitionScorer, model: ScoringModel, switch: Switch, offset: int
    ) -> SwitchPlan:
        replay = Replay(model, self.horizon)
        async for records in read_until(self.settings, scorer.tp.partition, offset):
            for index, record in enumerate(records, 1):
                replay.add(record)
                if index % (YIELD_EVERY * 20) == 0:
                    await asyncio.sleep(0)  # the other partitions' transactions move on
        return plan_switch(scorer.state.leads, replay.finish(), switch)

    def _encode_switch(self, plan: SwitchPlan, switch: Switch, offset: int) -> ScoredBatch:
        batch = ScoredBatch(applied_offset=offset)
        for score in plan.scores:
            batch.emit_score(self.topics.scores, encode_key(score.lead_id), score)
        for change in plan.stage_changes:
            batch.emit_change(self.topics.stage_changes, encode_key(change.lead_id), change)
        kept = set(plan.not_rescored)
        batch.changelog = [
            *(
                (encode_key(lead_id), lead_record(state))
                for lead_id, state in plan.leads.items()
                if lead_id not in kept
            ),
            (LIVE_MODEL_KEY, live_model_record(switch.version, offset)),
            (APPLIED_OFFSET_KEY, applied_offset_record(offset)),
        ]
        return batch


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Awaited by aiokafka around a rebalance; the worker's lock keeps batches whole."""

    def __init__(self, worker: ScoringWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.worker.release(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.worker.take(assigned)


def _has_switch(records: Sequence[Any], *, after: int) -> bool:
    """Whether a model switch record not yet applied is among ``records``."""
    return any(record.offset > after and switch_of(record) is not None for record in records)


async def _close_quietly(producer: AIOKafkaProducer) -> None:
    """Stopping a fenced producer raises; it is being discarded either way."""
    try:
        await producer.stop()
    except KafkaError as exc:
        log.debug("closing a producer: %r", exc)

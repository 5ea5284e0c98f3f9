"""Scoring state backed by the compacted ``leadflow.scoring-state`` changelog.

The state of input partition ``p`` lives in changelog partition ``p``
(written to that partition explicitly, whatever the key hashes to), so a
worker restores exactly the partitions it is assigned. Besides one record per
lead, each partition holds one marker record: the last input offset applied.
Both are written in the same transaction as the outputs and the consumer
offsets, so state, outputs and progress never disagree. An erased lead's key gets a
tombstone (a null value): restoring drops the lead, and compaction removes the key; so
does an anonymous lead merged into a known one, whose alias marker (``\x00alias\x00<id>``,
:mod:`services.scoring.identity`) then says where its later events go. The records'
layout is :mod:`services.scoring.state_records`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
from aiokafka import TopicPartition

from services.scoring.identity import ALIAS_PREFIX, alias_of_key, read_alias
from services.scoring.lead import LeadState
from services.scoring.membership import (
    MEMBERSHIP_PREFIX,
    Membership,
    lead_of_key,
    read_membership,
)
from services.scoring.state_records import (
    APPLIED_OFFSET_KEY,
    LIVE_MODEL_KEY,
    is_legacy,
    read_applied_offset,
    read_lead,
    read_live_model,
)
from shared.kafka import make_consumer
from shared.settings import LeadflowSettings


@dataclass
class PartitionState:
    leads: dict[str, LeadState] = field(default_factory=dict)
    applied_offset: int = -1
    """The last input offset whose effects are in ``leads``; -1 before any."""
    legacy: set[str] = field(default_factory=set)
    """Leads restored from a record keyed by rule position (format 1 or 2): written again,
    in format 3, by the partition's next transaction, so they are mapped only once."""
    model_version: str | None = None
    """The model the partition scores under since its last model switch; ``None``: none
    yet, the workers' model file."""
    memberships: dict[str, Membership] = field(default_factory=dict)
    """Each lead's account membership (:mod:`services.scoring.membership`), by lead id."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Anonymous ids merged into a known lead, and that lead (its events follow it)."""


def apply_record(
    state: PartitionState,
    key: bytes | None,
    value: bytes | None,
    legacy_ids: Sequence[str] = (),
) -> None:
    """Fold one changelog record into ``state``; a tombstone means the lead has no state
    (it was erased), whatever an earlier record of the same key held. ``legacy_ids``: the
    engagement rule ids by position, for records of formats 1 and 2."""
    if key is None:
        return
    if key.startswith(MEMBERSHIP_PREFIX):
        if value is None:
            state.memberships.pop(lead_of_key(key), None)
        else:
            state.memberships[lead_of_key(key)] = read_membership(value)
    elif key.startswith(ALIAS_PREFIX):
        if value is None:
            state.aliases.pop(alias_of_key(key), None)
        else:
            state.aliases[alias_of_key(key)] = read_alias(value)
    elif value is None:
        lead_id = key.decode()
        state.leads.pop(lead_id, None)
        state.legacy.discard(lead_id)
    elif key == APPLIED_OFFSET_KEY:
        state.applied_offset = read_applied_offset(value)
    elif key == LIVE_MODEL_KEY:
        state.model_version = read_live_model(value)
    else:
        lead_id, data = key.decode(), orjson.loads(value)
        state.leads[lead_id] = read_lead(data, legacy_ids)
        if is_legacy(data):
            state.legacy.add(lead_id)
        else:
            state.legacy.discard(lead_id)


async def restore(
    settings: LeadflowSettings,
    partition: int,
    timeout: float = 120.0,
    legacy_ids: Sequence[str] = (),
) -> PartitionState:
    """Read changelog partition ``partition`` from the start to its (stable) end.

    Call it only after the partition's transactional producer was initialised:
    that aborts the previous owner's open transaction, so the last stable
    offset moves to the end and read_committed reading can reach it.
    """
    state = PartitionState()

    def apply(key: bytes | None, value: bytes | None) -> None:
        apply_record(state, key, value, legacy_ids)

    await read_to_end(settings, settings.topics.scoring_state, partition, apply, timeout)
    return state


async def read_to_end(
    settings: LeadflowSettings,
    topic: str,
    partition: int,
    apply: Callable[[bytes | None, bytes | None], None],
    timeout: float = 120.0,
) -> None:
    """Hand every committed record of ``topic[partition]``, from the start to its stable
    end, to ``apply``: how both stages of scoring restore a changelog partition."""
    tp = TopicPartition(topic, partition)
    consumer = make_consumer(settings, name="scoring-restore", group_id=None)
    try:
        await consumer.start()  # inside: a start that fails still stops its client
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        deadline = time.monotonic() + timeout
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"restoring {topic}[{partition}] took over {timeout}s")
            batches = await consumer.getmany(tp, timeout_ms=500, max_records=10_000)
            for record in batches.get(tp, []):
                apply(record.key, record.value)
    finally:
        await consumer.stop()

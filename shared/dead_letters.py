"""The dead-letter record of ``leadflow.dead-letters``: enough to see why a record failed
and to replay it by hand. The one format every service writes there (docs §5.6).

Scoring sends its dead letters in its partition's transaction, the pipeline with its own
producer before it commits the offset past them; both build them here.
"""

from __future__ import annotations

import base64
from typing import Any, Protocol

import orjson

MAX_QUOTED_BYTES = 64 * 1024
"""Quote at most this much of the failed value: a dead letter must fit where the original did."""


def dead_letter(
    *,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
) -> bytes:
    """JSON naming the source record by topic/partition/offset, with the reason.

    The value is quoted as text when it is UTF-8, as base64 otherwise, and
    truncated beyond :data:`MAX_QUOTED_BYTES` (its full size is recorded).
    """
    raw = value or b""
    quoted = raw[:MAX_QUOTED_BYTES]
    record: dict[str, Any] = {
        "reason": reason,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "key": key.decode(errors="replace") if key is not None else None,
        "value_bytes": len(raw),
        "value_truncated": len(raw) > len(quoted),
    }
    try:
        record["value"] = quoted.decode()
    except UnicodeDecodeError:
        record["value_base64"] = base64.b64encode(quoted).decode()
    return orjson.dumps(record)


class FailedRecord(Protocol):
    """What a dead letter quotes of a consumed record (aiokafka's ``ConsumerRecord`` is one)."""

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


def dead_letter_of(record: FailedRecord, reason: str) -> tuple[bytes, bytes]:
    """The dead letter of a consumed record as ``(key, value)``: keyed as the failed record
    (an empty key when it had none), so a lead's dead letters share a partition."""
    value = dead_letter(
        reason=reason,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
    )
    return record.key or b"", value

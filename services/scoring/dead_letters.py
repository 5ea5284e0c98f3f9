"""The dead-letter record: enough to see why a record failed and to replay it by hand."""

from __future__ import annotations

import base64
from typing import Any

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

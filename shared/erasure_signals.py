"""Scoring's erasure signals as the services that keep lead data read them: pure, no I/O.

When scoring erases a lead it writes a null-valued record keyed by the lead id to
``leadflow.scores`` (a tombstone: compaction removes the key) and to
``leadflow.stage-changes``, both carrying the erase id in a header. The pipeline deletes
the lead's rows on the first it reads, what the other topic wrote since on the second,
and then marks the erase request complete (:func:`services.pipeline.store.record_batch`);
the webhooks service deletes the lead's messages, attempts and totals.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from shared.events import ERASE_ID_HEADER, ERASE_REQUESTED_AT_HEADER

Topic = Literal["scores", "stage_changes"]


@dataclass(frozen=True, slots=True)
class ErasureSignal:
    """Scoring erased ``lead_id``; ``erase_id`` names the request (``None``: not known)."""

    lead_id: str
    topic: Topic
    erase_id: str | None = None
    requested_at: datetime | None = None


def decode_signal(
    topic: Topic, key: bytes | None, headers: Iterable[tuple[str, bytes]] | None
) -> ErasureSignal:
    """The signal a null-valued record stands for; ``ValueError`` without a lead id."""
    if not key:
        raise ValueError("an erasure signal without a key names no lead")
    found = {name: value for name, value in headers or ()}
    erase_id = found.get(ERASE_ID_HEADER)
    requested = found.get(ERASE_REQUESTED_AT_HEADER)
    return ErasureSignal(
        lead_id=key.decode(),
        topic=topic,
        erase_id=erase_id.decode() if erase_id else None,
        requested_at=datetime.fromisoformat(requested.decode()) if requested else None,
    )


def after_erasures(records: Sequence[Any]) -> Sequence[Any]:
    """One partition's records without those its own later erasure signals supersede.

    A record of a lead that precedes a signal of that lead in the same partition belongs
    to the erased lead: writing it would only be deleted again. Records after the last
    signal are a new lead of the same id, and stay.
    """
    last = {record.key: index for index, record in enumerate(records) if record.value is None}
    if not last:
        return records
    return [
        record
        for index, record in enumerate(records)
        if record.value is None or index > last.get(record.key, -1)
    ]

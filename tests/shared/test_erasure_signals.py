"""Which records erase what: scoring's null-valued records decoded, and the records they
supersede in their partition dropped."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from shared.erasure_signals import ErasureSignal, after_erasures, decode_signal
from shared.events import ERASE_ID_HEADER, ERASE_REQUESTED_AT_HEADER

ADA, BOB = "ada@example.com", "bob@example.org"
REQUESTED = datetime(2026, 12, 1, 8, tzinfo=UTC)


def record(key: bytes, value: bytes | None) -> SimpleNamespace:
    return SimpleNamespace(key=key, value=value)


def test_records_before_a_signal_of_their_lead_in_the_partition_are_dropped() -> None:
    ada, bob = ADA.encode(), BOB.encode()
    records = [
        record(ada, b"1"),
        record(bob, b"2"),
        record(ada, None),
        record(ada, b"3"),
        record(ada, None),
        record(ada, b"4"),
        record(bob, b"5"),
    ]
    kept = after_erasures(records)
    assert [(r.key, r.value) for r in kept] == [
        (bob, b"2"),
        (ada, None),
        (ada, None),
        (ada, b"4"),
        (bob, b"5"),
    ]
    plain = [record(bob, b"1")]
    assert after_erasures(plain) == plain


def test_a_signal_decodes_from_its_key_and_headers() -> None:
    headers = [(ERASE_ID_HEADER, b"e-9"), (ERASE_REQUESTED_AT_HEADER, b"2026-12-01T08:00:00Z")]
    assert decode_signal("scores", ADA.encode(), headers) == ErasureSignal(
        ADA, "scores", "e-9", REQUESTED
    )
    assert decode_signal("stage_changes", ADA.encode(), None) == ErasureSignal(ADA, "stage_changes")

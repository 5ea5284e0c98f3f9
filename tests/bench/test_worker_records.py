"""What the same-records passthrough writes: the worker's records for the same inputs."""

from __future__ import annotations

from collections import Counter

from bench.payload import bench_events, record_values
from bench.worker_records import (
    Filler,
    Output,
    Written,
    split,
    transaction_of,
    written_batches,
    written_by_input,
)
from services.scoring.state_records import APPLIED_OFFSET_KEY, read_applied_offset
from shared.kafka import encode_key

HEADERS = [("ce_id", b"x")]


def test_a_transaction_holds_one_changelog_record_per_lead_then_the_offset_marker() -> None:
    written = {
        b"a1": Written(Output(900, HEADERS), None, 1200),
        b"b1": Written(Output(950, HEADERS), Output(370, HEADERS), 1000),
        b"a2": Written(Output(910, HEADERS), None, 1300),
        b"dup": Written(),
    }
    batch = [(b"a", b"a1"), (b"b", b"b1"), (b"a", b"a2"), (b"a", b"dup"), (b"c", b"unknown")]
    transaction = transaction_of(batch, written, 41, Filler())
    assert [(key, len(value)) for key, value in transaction.changelog[:-1]] == [
        (b"a", 1300),
        (b"b", 1000),
    ]
    marker_key, marker = transaction.changelog[-1]
    assert marker_key == APPLIED_OFFSET_KEY
    assert read_applied_offset(marker) == 41
    assert [(k, len(v), h) for k, v, h in transaction.scores] == [
        (b"a", 900, HEADERS),
        (b"b", 950, HEADERS),
        (b"a", 910, HEADERS),
    ]
    assert [(k, len(v)) for k, v, _ in transaction.changes] == [(b"b", 370)]


def test_the_stream_splits_by_the_producers_partitioner_with_offsets_from_zero() -> None:
    records = record_values(bench_events(600, run_id="t"))
    shares = split(records, 3)
    assert sum(len(share) for share in shares) == len(records)
    for partition, share in enumerate(shares):
        assert [r.offset for r in share] == list(range(len(share)))
        assert {r.partition for r in share} <= {partition}
    assert len({r.key for share in shares for r in share}) == len({k for k, _ in records})


def test_the_passthrough_writes_what_the_worker_writes_for_the_same_batches() -> None:
    records = record_values(bench_events(1_500, run_id="t"))
    batches = list(written_batches(records, partitions=3, batch_records=200))
    written = written_by_input(iter(batches))
    assert len(written) == len(records)
    filler = Filler()
    for batch in batches:
        values = dict((v, k) for k, v in records)
        inputs = [(values[value], value) for value, _ in batch.inputs]
        last = read_applied_offset(batch.changelog[-1][1] or b"")
        transaction = transaction_of(inputs, written, last, filler)
        assert [(k, len(v)) for k, v in transaction.changelog] == [
            (k, len(v or b"")) for k, v in batch.changelog
        ]
        assert [len(v) for _, v, _ in transaction.scores] == batch.outputs["scores"]
        assert [len(v) for _, v, _ in transaction.changes] == batch.outputs.get("stage-changes", [])


def test_every_event_of_the_bench_stream_is_scored_once() -> None:
    records = record_values(bench_events(900, run_id="t"))
    batches = list(written_batches(records, partitions=2, batch_records=100))
    scored = Counter(len(batch.outputs["scores"]) for batch in batches)
    assert sum(size * n for size, n in scored.items()) == len(records)
    leads = {key for batch in batches for key, _ in batch.changelog} - {APPLIED_OFFSET_KEY}
    assert leads == {encode_key(k.decode()) for k, _ in records}

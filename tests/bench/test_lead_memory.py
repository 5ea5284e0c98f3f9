"""The memory case's changelog: compacted as a broker would, copied without sharing."""

from __future__ import annotations

import pytest

from bench.lead_memory import renamed, restore
from bench.memory import compacted
from bench.payload import bench_events, record_values
from bench.worker_records import written_batches
from services.scoring.state_records import APPLIED_OFFSET_KEY


def test_compaction_keeps_the_last_record_of_each_lead_and_drops_markers_and_tombstones() -> None:
    changelog: list[tuple[bytes, bytes | None]] = [
        (b"a", b"1"),
        (b"b", b"1"),
        (APPLIED_OFFSET_KEY, b"{}"),
        (b"a", b"2"),
        (b"c", b"1"),
        (b"c", None),
    ]
    assert compacted(changelog) == [(b"b", b"1"), (b"a", b"2")]


@pytest.fixture(scope="module")
def sample() -> tuple[bytes, list[tuple[bytes, bytes]]]:
    records = record_values(bench_events(1_200, run_id="sample"))
    batches = written_batches(records, partitions=1, batch_records=500)
    return b"sample", compacted([record for batch in batches for record in batch.changelog])


def test_a_copy_renames_every_lead_and_keeps_the_record_sizes(
    sample: tuple[bytes, list[tuple[bytes, bytes]]],
) -> None:
    _, records = sample
    copy = renamed(sample, 7, len(records))
    assert [len(v) for _, v in copy] == [len(v) for _, v in records]
    assert not any(b"sample" in key or b"sample" in value for key, value in copy)
    assert len({key for key, _ in copy} | {key for key, _ in records}) == 2 * len(records)


def test_restoring_copies_holds_exactly_the_leads_asked_for(
    sample: tuple[bytes, list[tuple[bytes, bytes]]],
) -> None:
    wanted = len(sample[1]) * 2 + 3
    state, seconds = restore(sample, wanted)
    assert len(state.leads) == wanted
    assert seconds > 0
    assert all(lead.lead_id == lead_id for lead_id, lead in state.leads.items())

"""How a batch's lead ids are bound to the statements built once (journeys.bound_chunks)."""

from __future__ import annotations

from services.pipeline.journeys import BATCH_LEADS, CHUNK, bound_chunks


def test_each_chunk_names_its_leads_padded_to_a_power_of_two_or_the_chunk_size() -> None:
    for count in (1, 2, 3, 5, 42, 255, 256, 257, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7):
        leads = [f"lead-{n}" for n in range(count)]
        chunks = [chunk[BATCH_LEADS] for chunk in bound_chunks(leads)]
        assert [lead for chunk in chunks for lead in dict.fromkeys(chunk)] == leads
        for chunk in chunks:
            assert len(chunk) == CHUNK or len(chunk) & (len(chunk) - 1) == 0, (count, len(chunk))
            assert len(chunk) < 2 * len(set(chunk)), (count, len(chunk))


def test_no_leads_bind_no_statement() -> None:
    assert list(bound_chunks([])) == []

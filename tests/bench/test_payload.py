"""The benchmark's payload: realistic, valid events of about 300 bytes, the same every run."""

from __future__ import annotations

import orjson

from bench.payload import batch_bodies, bench_events, mean_record_bytes, record_values
from shared.events import Event
from shared.kafka import encode_key


def test_the_events_are_valid_and_about_300_bytes_on_the_topic() -> None:
    events = bench_events(2_000, run_id="t")
    assert len(events) == 2_000
    records = record_values(events)
    assert 280 <= mean_record_bytes(records) <= 320
    for (key, value), raw in zip(records, events, strict=True):
        event = Event.model_validate_json(value)
        assert key == encode_key(raw["lead_id"]) == encode_key(event.lead_id)


def test_the_stream_is_in_event_time_order_across_many_leads() -> None:
    events = [Event.model_validate(raw) for raw in bench_events(2_000, run_id="t")]
    times = [event.occurred_at for event in events]
    assert times == sorted(times)
    assert len({event.lead_id for event in events}) > 100


def test_the_same_seed_gives_the_same_events_and_a_run_id_new_leads() -> None:
    assert bench_events(300, run_id="a") == bench_events(300, run_id="a")
    leads_a = {raw["lead_id"] for raw in bench_events(300, run_id="a")}
    leads_b = {raw["lead_id"] for raw in bench_events(300, run_id="b")}
    assert not leads_a & leads_b


def test_batch_bodies_are_json_arrays_of_the_events_in_order() -> None:
    events = bench_events(250, run_id="t")
    bodies = batch_bodies(events, 100)
    assert [len(orjson.loads(body)) for body in bodies] == [100, 100, 50]
    assert [item for body in bodies for item in orjson.loads(body)] == events

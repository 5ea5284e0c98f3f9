"""Reconnects to a broker that is down wait, and each wait doubles up to a ceiling."""

from __future__ import annotations

import logging

import pytest
from aiokafka.client import AIOKafkaClient

from devtools.broker import free_port
from shared.reconnect import FIRST, MOST, Backoff, back_off_reconnects


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_waits_double_up_to_the_ceiling_and_a_success_resets_them() -> None:
    clock = Clock()
    backoff = Backoff(first=0.05, most=1.0, clock=clock)
    assert not backoff.waiting()
    assert [backoff.failed() for _ in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.waiting()
    clock.now += 1.0
    assert not backoff.waiting()
    backoff.succeeded()
    assert backoff.failed() == 0.05


async def test_a_node_that_refuses_is_tried_once_per_wait(caplog: pytest.LogCaptureFixture) -> None:
    """The real aiokafka client against a loopback port nobody listens on."""
    clock = Clock()
    client = AIOKafkaClient(bootstrap_servers=f"127.0.0.1:{free_port()}")
    back_off_reconnects(client, clock=clock)
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        results = [await client._get_conn(1) for _ in range(100)]
        clock.now += FIRST
        results.append(await client._get_conn(1))
    assert results == [None] * 101
    failures = [r for r in caplog.records if r.getMessage().startswith("Unable connect to node")]
    assert len(failures) == 2  # the first try, and one after the wait; none in between


async def test_a_metadata_update_that_reaches_no_broker_waits_longer_each_time() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    client = AIOKafkaClient(bootstrap_servers=f"127.0.0.1:{free_port()}")
    back_off_reconnects(client, sleep=sleep)
    for _ in range(7):
        assert not await client._metadata_update(client.cluster, set())
    assert waits == [FIRST * 2**n for n in range(5)] + [MOST, MOST]

"""The publisher's recovery when the broker stops accepting its producer's sequence numbers.

The broker restart that causes it is exercised for real by the fault tests
(``tests/faults/test_outages.py``); here, which errors replace the producer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.errors import OutOfOrderSequenceNumber, RequestTimedOutError

from services.ingest.publisher import EventPublisher, KafkaUnavailable
from services.ingest.settings import IngestSettings
from shared.events import Event

EVENT = Event(
    event_id="e-1", type="email.opened", lead_id="ada@example.com", occurred_at=datetime.now(UTC)
)


class Refusing:
    """Stands in for a started producer whose every send fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.stopped = False

    async def send(self, *_: Any, **__: Any) -> Any:
        raise self.error

    async def stop(self) -> None:
        self.stopped = True


async def publish_with(producer: Refusing) -> EventPublisher:
    publisher = EventPublisher(IngestSettings())
    publisher._producer = producer
    with pytest.raises(KafkaUnavailable):
        await publisher.publish([EVENT])
    return publisher


async def test_a_producer_whose_sequences_are_refused_is_replaced() -> None:
    broken = Refusing(OutOfOrderSequenceNumber())
    publisher = await publish_with(broken)
    assert broken.stopped
    assert publisher._producer is None  # the next publish starts a new producer


async def test_other_failures_keep_the_producer() -> None:
    slow = Refusing(RequestTimedOutError())
    publisher = await publish_with(slow)
    assert not slow.stopped
    assert publisher._producer is slow

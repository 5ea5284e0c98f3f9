"""Consumer lag per partition from what the consumer already knows: no request of its own.

Every fetch response carries the partition's highwater and last stable offset, and the
consumer knows its position, so the lag costs nothing to compute after each poll. A
read_committed consumer can read up to the last stable offset, not the highwater: the
records of an open transaction are not lag yet. Both ends count transaction markers,
and so does the position once a fetch has passed them, so at rest the lag is zero.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Gauge


def consumer_lag(position: int, highwater: int | None, last_stable: int | None) -> int | None:
    """Records between ``position`` and the end the consumer may read; ``None`` if unknown."""
    end = last_stable if last_stable is not None and last_stable >= 0 else highwater
    if end is None or end < 0:
        return None
    return max(0, end - position)


def position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """The next offset the consumer will hand out of ``tp``, if it has one now.

    ``None`` when ``tp`` is not assigned (revoked meanwhile: its new owner reads on from
    the committed offset) or its position is being reset. Never waits: aiokafka's
    ``position()`` waits for a reset to finish, up to the request timeout, which would
    stall the loop that asks while the broker is away. Reads the consumer's subscription
    state for that (aiokafka has no public call that does not wait).
    """
    subscription = consumer._subscription.subscription
    if subscription is None or subscription.assignment is None:
        return None
    state = subscription.assignment.state_value(tp)
    if state is None or not state.has_valid_position:
        return None
    at: int = state.position
    return at


def fetched_positions(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """Positions of the partitions fetched since they were assigned (others have none yet)."""
    fetched = [tp for tp in consumer.assignment() if consumer.highwater(tp) is not None]
    return {tp: at for tp in fetched if (at := position(consumer, tp)) is not None}


class LagGauge:
    """A ``{topic, partition}`` gauge kept to the consumer's assignment."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self._reported: set[TopicPartition] = set()

    def update(self, consumer: AIOKafkaConsumer) -> None:
        for tp, at in fetched_positions(consumer).items():
            lag = consumer_lag(at, consumer.highwater(tp), consumer.last_stable_offset(tp))
            if lag is not None:
                self.gauge.labels(tp.topic, str(tp.partition)).set(lag)
                self._reported.add(tp)
        for tp in self._reported - consumer.assignment():
            self.gauge.remove(tp.topic, str(tp.partition))  # another member reports it now
            self._reported.discard(tp)

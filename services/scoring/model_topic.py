"""The ``leadflow.models`` topic and the switch records: reading and writing them.

The layout of both records is :mod:`services.scoring.publication`. Publications are read
whole (the topic holds one small record per version ever published) with read_committed,
from the beginning to the end offset taken first.
"""

from __future__ import annotations

from services.scoring.changelog import read_to_end
from services.scoring.publication import SWITCH_KEY, Publication, Switch
from shared.kafka import make_producer
from shared.settings import LeadflowSettings


async def read_publications(settings: LeadflowSettings, timeout: float = 60.0) -> list[Publication]:
    """Every publication, in the order they were first published (the latest is live)."""
    by_version: dict[str, Publication] = {}

    def apply(key: bytes | None, value: bytes | None) -> None:
        if key is not None and value is not None:
            publication = Publication.read(value)
            # a version published again keeps its first place: dicts keep insertion order
            by_version[publication.version] = publication

    await read_to_end(settings, settings.topics.models, 0, apply, timeout)
    return list(by_version.values())


async def find_publication(settings: LeadflowSettings, version: str) -> Publication | None:
    for publication in await read_publications(settings):
        if publication.version == version:
            return publication
    return None


async def write_publication(settings: LeadflowSettings, publication: Publication) -> None:
    """Written with ``acks=all`` before any switch record names the version."""
    producer = make_producer(settings, name="models-writer")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topics.models, publication.value(), key=publication.key(), partition=0
        )
    finally:
        await producer.stop()


async def write_switches(settings: LeadflowSettings, switch: Switch) -> dict[int, int]:
    """A switch record into every partition of ``leadflow.events``; their offsets by partition.

    Not in a transaction: ``leadflow.events`` holds no transaction markers, which scoring's
    offset commits rely on (docs/architecture.md §5.4). A crash half-way is mended by
    publishing again: a partition already switched to the version ignores its second switch.
    """
    topic = settings.topics.events
    producer = make_producer(settings, name="models-switch")
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        sent = [
            await producer.send(topic, switch.value(), key=SWITCH_KEY, partition=partition)
            for partition in partitions
        ]
        offsets = {}
        for partition, delivery in zip(partitions, sent, strict=True):
            offsets[partition] = (await delivery).offset
    finally:
        await producer.stop()
    return offsets

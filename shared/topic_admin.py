"""Creating leadflow's topics on a cluster, waiting for it to answer, and checking the topics
fit together: what ``leadflow topics`` runs against production and what the local broker
uses too. Every admin client comes from the one factory, so it connects as the services do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from shared.kafka import make_admin
from shared.settings import LeadflowSettings
from shared.topics import Topics, TopicSpec


class TopicMismatch(Exception):
    """The topics exist but cannot work together; restarting will not help."""


@dataclass
class TopicsReport:
    """What ``create_topics`` did: topics that exist already are never altered."""

    created: list[TopicSpec] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


async def wait_until_ready(settings: LeadflowSettings, timeout: float = 60.0) -> None:
    """Wait until the broker answers metadata requests, i.e. clients can use it."""
    deadline = time.monotonic() + timeout
    while True:
        admin = make_admin(settings, name="admin", request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            await admin.close()


async def create_topics(
    settings: LeadflowSettings,
    partitions: int = 3,
    timeout: float = 60.0,
    replication_factor: int = 1,
    min_insync_replicas: int | None = None,
    topics: Topics | None = None,
) -> TopicsReport:
    """Create leadflow's missing topics; ones that exist already are left alone (not altered).

    ``min_insync_replicas`` (with ``acks=all``, which every leadflow producer uses) is how
    many replicas must have a write before it is acknowledged: 2 of 3 keeps writes going
    through one broker's loss without risking acknowledged data. ``topics``: other specs
    than the settings' (tests that make compaction run at once).
    """
    await wait_until_ready(settings, timeout)
    report = TopicsReport()
    admin = make_admin(settings, name="admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        for spec in (topics or settings.topics).specs():
            if spec.name in existing:
                report.existing.append(spec.name)
                continue
            config = dict(spec.config)
            if min_insync_replicas is not None:
                config["min.insync.replicas"] = str(min_insync_replicas)
            report.created.append(TopicSpec(spec.name, config, spec.partitions))
        wanted = [
            NewTopic(
                spec.name,
                spec.partitions or partitions,
                replication_factor,
                topic_configs=spec.config,
            )
            for spec in report.created
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                await admin.create_topics(wanted)
        await _wait_for_leaders(admin, [t.name for t in wanted], timeout)
    finally:
        await admin.close()
    return report


async def check_partitions(settings: LeadflowSettings) -> None:
    """Scoring keeps the state of events partition p in changelog partition p: the counts
    must match, or some leads' state would be restored by the wrong worker (or nowhere).

    Raises :class:`TopicMismatch` naming both counts; a missing topic is a
    :class:`~aiokafka.errors.UnknownTopicOrPartitionError` (it may be on its way: retry).
    """
    topics = settings.topics
    await check_copartitioned(
        settings,
        topics.events,
        topics.scoring_state,
        "scoring keeps the state of events partition p in changelog partition p",
    )


async def partitions_of(settings: LeadflowSettings, topic: str) -> list[int]:
    """The partition numbers of ``topic``, as the cluster describes it (a new client's
    metadata does not have a topic it has not used yet)."""
    admin = make_admin(settings, name="admin")
    await admin.start()
    try:
        if topic not in await admin.list_topics():  # described, a missing one may be created
            raise UnknownTopicOrPartitionError(f"topic {topic} does not exist")
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(int(partition["partition"]) for partition in described["partitions"])


async def check_copartitioned(
    settings: LeadflowSettings, source: str, changelog: str, why: str
) -> None:
    """``source`` and its ``changelog`` have the same partition count, else
    :class:`TopicMismatch` naming both counts and ``why`` they must match."""
    names = [source, changelog]
    admin = make_admin(settings, name="admin")
    await admin.start()
    try:
        # listed first: naming a missing topic in a metadata request creates it on a
        # cluster that auto-creates topics, with none of the settings it needs
        missing = set(names) - set(await admin.list_topics())
        if missing:
            raise UnknownTopicOrPartitionError(
                f"not created yet: {', '.join(sorted(missing))} (`leadflow topics` creates "
                "the topics)"
            )
        described = {t["topic"]: t for t in await admin.describe_topics(names)}
    finally:
        await admin.close()
    counts = {name: len(described[name]["partitions"]) for name in names}
    if counts[source] != counts[changelog]:
        raise TopicMismatch(
            f"{source} has {counts[source]} partitions but the scoring changelog "
            f"{changelog} has {counts[changelog]}: {why}, so both need the same count "
            "(see deploy/README.md, How many partitions)"
        )


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout: float) -> None:
    """Topic creation returns before every partition has a leader; producers need one."""
    deadline = time.monotonic() + timeout
    while names:
        described = await admin.describe_topics(names)
        ready = all(
            t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {names} have no leader after {timeout}s")
        await asyncio.sleep(0.1)

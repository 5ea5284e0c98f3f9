"""Creating leadflow's topics on a cluster and waiting for it to answer: what
``leadflow topics`` runs against production and what the local broker uses too."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from shared.topics import Topics


async def wait_until_ready(bootstrap_servers: str, timeout: float = 60.0) -> None:
    """Wait until the broker answers metadata requests, i.e. clients can use it."""
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
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
    bootstrap_servers: str,
    topics: Topics,
    partitions: int = 3,
    timeout: float = 60.0,
    replication_factor: int = 1,
) -> None:
    """Create leadflow's topics; ones that exist already are left alone (not altered)."""
    await wait_until_ready(bootstrap_servers, timeout)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(spec.name, partitions, replication_factor, topic_configs=spec.config)
            for spec in topics.specs()
            if spec.name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                await admin.create_topics(wanted)
        await _wait_for_leaders(admin, [t.name for t in wanted], timeout)
    finally:
        await admin.close()


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

"""Which model is live, for scoring's HTTP answers: what ``leadflow.models`` holds, re-read
at most every few seconds.

The workers take a model from the switch records in their partitions
(docs/architecture.md §5.9); this is only what ``GET /v1/model`` and its history report.
Before any publication, and while the topic cannot be read and never was, the live model
is the workers' model file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiokafka.errors import KafkaError

from services.scoring.model_topic import read_publications
from services.scoring.publication import Publication
from shared.settings import LeadflowSettings

log = logging.getLogger(__name__)

FRESH_SECONDS = 5.0
"""How long a read of the topic answers before the next request reads it again."""


class PublishedModels:
    def __init__(
        self,
        settings: LeadflowSettings,
        fresh_seconds: float = FRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.fresh_seconds = fresh_seconds
        self.clock = clock
        self._publications: list[Publication] | None = None
        self._read_at = -fresh_seconds

    async def publications(self) -> list[Publication] | None:
        """Every publication in order; the last read's when the topic cannot be read now,
        ``None`` when it never could."""
        if self.clock() - self._read_at < self.fresh_seconds:
            return self._publications
        self._read_at = self.clock()  # a failing read is not retried on every request
        try:
            self._publications = await read_publications(self.settings, timeout=5.0)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("cannot read %s: %r", self.settings.topics.models, exc)
        return self._publications

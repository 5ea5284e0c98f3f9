"""Replaying a partition of ``leadflow.events`` under a model, in memory: pure, no I/O.

The rescoring run (the dry-run report) and a worker switching models both fold a
partition's records through the worker's own batch code (:mod:`services.scoring.batch`),
so a lead's replayed state is exactly what the worker would hold had the model been live
from the start. Switch records (:mod:`services.scoring.publication`) are not events:
they are skipped. What the replay keeps per lead is its state and its latest score
update; the score updates in between are dropped chunk by chunk, so memory follows the
number of leads, not of events.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from services.scoring.batch import BatchScoring
from services.scoring.lead import DEFAULT_HORIZON, LeadState
from services.scoring.model import ScoringModel
from services.scoring.publication import is_switch
from services.scoring.scoring import NewScore
from shared.kafka import ConsumedRecord

CHUNK_RECORDS = 5000
"""Records scored per batch of the replay: the score updates of one chunk are held at once."""


@dataclass
class Replayed:
    """A replayed partition: what each lead would hold and show under the model."""

    leads: dict[str, LeadState] = field(default_factory=dict)
    scores: dict[str, NewScore] = field(default_factory=dict)
    """Each lead's latest score update under the model."""
    reasons: dict[str, str] = field(default_factory=dict)
    """The reason of each lead's latest stage change under the model."""
    records: int = 0
    """Input records read, switch records included."""
    refused: int = 0
    """Records the batch code refused (they went to dead letters when they were live)."""
    last_offset: int = -1
    aliases: dict[str, str] = field(default_factory=dict)
    """Anonymous ids merged into known leads (:mod:`services.scoring.identity`): their
    later events are forwarded, not scored here; what was forwarded and merged is in the
    known leads' partitions, which a replay of those folds under the same model."""


class Replay:
    """Feed a partition's records in offset order with :meth:`add`, then :meth:`finish`."""

    def __init__(self, model: ScoringModel, horizon: timedelta = DEFAULT_HORIZON) -> None:
        self.model = model
        self.horizon = horizon
        self.replayed = Replayed()
        self._chunk: list[ConsumedRecord] = []

    def add(self, record: ConsumedRecord) -> None:
        self.replayed.records += 1
        self.replayed.last_offset = record.offset
        if is_switch(record):
            return
        self._chunk.append(record)
        if len(self._chunk) >= CHUNK_RECORDS:
            self._score_chunk()

    def add_all(self, records: Iterable[ConsumedRecord]) -> None:
        for record in records:
            self.add(record)

    def finish(self) -> Replayed:
        self._score_chunk()
        return self.replayed

    def _score_chunk(self) -> None:
        if not self._chunk:
            return
        replayed = self.replayed
        scoring = BatchScoring(
            self.model, replayed.leads, horizon=self.horizon, aliases=replayed.aliases
        )
        for record in self._chunk:
            scoring.add(record)
        result = scoring.finish()
        self._chunk = []
        replayed.refused += len(result.refused)
        for erased in result.erased:  # before the chunk's scores: those came after it
            replayed.scores.pop(erased.lead_id, None)
            replayed.reasons.pop(erased.lead_id, None)
        for scored in result.scored:
            replayed.scores[scored.lead_id] = scored.score
            if scored.stage_change is not None:
                replayed.reasons[scored.lead_id] = scored.stage_change.reason
        for retired in result.retired:  # merged: no lead of its own any more
            if retired.lead_id not in replayed.leads:
                replayed.scores.pop(retired.lead_id, None)
                replayed.reasons.pop(retired.lead_id, None)


def replay(
    records: Iterable[ConsumedRecord],
    model: ScoringModel,
    horizon: timedelta = DEFAULT_HORIZON,
) -> Replayed:
    """Fold ``records`` (one partition, in offset order) under ``model`` from nothing."""
    run = Replay(model, horizon)
    run.add_all(records)
    return run.finish()

"""Kafka topic names and their settings (docs/architecture.md §3).

Every topic name hangs off one namespace so that tests (and side-by-side
deployments) can isolate themselves on one broker by choosing another prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TopicSpec:
    name: str
    config: dict[str, str] = field(default_factory=dict)
    partitions: int | None = None
    """A fixed partition count; ``None``: the installation's (``leadflow topics --partitions``)."""


@dataclass(frozen=True)
class Topics:
    """The topic names of one leadflow installation."""

    namespace: str = "leadflow"
    events_retention_ms: int = -1
    """retention.ms of the events topic: -1 keeps every event, which rescoring with a new
    model and rebuilding the scoring state from scratch both need."""

    @property
    def events(self) -> str:
        return f"{self.namespace}.events"

    @property
    def scores(self) -> str:
        return f"{self.namespace}.scores"

    @property
    def stage_changes(self) -> str:
        return f"{self.namespace}.stage-changes"

    @property
    def dead_letters(self) -> str:
        return f"{self.namespace}.dead-letters"

    @property
    def scoring_state(self) -> str:
        return f"{self.namespace}.scoring-state"

    @property
    def models(self) -> str:
        """The scoring models published (``leadflow rescore --publish``): their history."""
        return f"{self.namespace}.models"

    @property
    def account_contributions(self) -> str:
        """Internal: what each lead adds to its account, keyed by account (docs §3.1)."""
        return f"{self.namespace}.account-contributions"

    @property
    def account_state(self) -> str:
        """Internal: the account stage's changelog, partition p for contributions partition p."""
        return f"{self.namespace}.account-state"

    @property
    def account_scores(self) -> str:
        return f"{self.namespace}.account-scores"

    def specs(self) -> list[TopicSpec]:
        """All topics with the settings they are created with.

        The two compacted topics keep only the latest record per key: the
        latest score of a lead, and the latest scoring state of a lead; likewise for
        accounts. The account contributions are read once by the account stage, which
        keeps what it needs of them in its own changelog. The events
        are the history everything else is derived from: kept for
        :attr:`events_retention_ms`. The models topic has one partition (its order is the
        order of publication) and one record per model version, compacted so that it is
        never deleted by age.
        """
        compacted = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
        return [
            TopicSpec(self.events, {"retention.ms": str(self.events_retention_ms)}),
            TopicSpec(self.scores, dict(compacted)),
            TopicSpec(self.stage_changes),
            TopicSpec(self.dead_letters),
            TopicSpec(self.scoring_state, dict(compacted)),
            TopicSpec(self.models, dict(compacted), partitions=1),
            TopicSpec(self.account_contributions),
            TopicSpec(self.account_state, dict(compacted)),
            TopicSpec(self.account_scores, dict(compacted)),
        ]

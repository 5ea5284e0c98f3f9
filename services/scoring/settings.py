"""Settings of the scoring service (``LEADFLOW_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import LeadflowSettings


class ScoringSettings(LeadflowSettings):
    port: int = Field(default=8002, description="HTTP port of scoring.")
    scoring_model: Path | None = Field(
        default=None, description="Scoring model YAML file; the shipped default when unset."
    )
    scoring_group: str = Field(
        default="leadflow-scoring", description="Consumer group of the scoring workers."
    )
    scoring_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Lead-stage worker processes in this service, one consumer group member"
        " each (scoring uses one core per process); more than the input partitions idle.",
    )
    scoring_batch_records: int = Field(
        default=500, ge=1, description="Most input records scored in one Kafka transaction."
    )
    scoring_gc_freeze_seconds: float = Field(
        default=10,
        gt=0,
        description="How often surviving objects (lead states) are hidden from Python's"
        " cyclic garbage collector, so full collections stay short.",
    )
    scoring_gc_collect_seconds: float = Field(
        default=900,
        gt=0,
        description="How often a full collection (a pause of about a second per million"
        " leads) gives back cyclic garbage that was frozen; also done at every rebalance.",
    )
    dedup_horizon_days: float = Field(
        default=30, gt=0, description="How long (event time) a lead remembers event ids."
    )
    scoring_accounts: bool = Field(
        default=True,
        description="Run the account stage (account roll-ups) in this process beside the"
        " lead stage; false on replicas that should only score leads.",
    )
    scoring_accounts_group: str = Field(
        default="leadflow-accounts",
        description="Consumer group of the account stage; also prefixes its transactional ids.",
    )

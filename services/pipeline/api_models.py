"""The shapes pipeline serves: what ``store`` queries return and the REST API sends.

Stage changes are served as the very records of ``leadflow.stage-changes``
(:class:`shared.events.StageChange`) plus where and when we recorded them, so
a CRM reads the same JSON whether it polls us or consumes the topic.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.api_models import Timestamp
from shared.events import RuleContribution, Stage, StageChange


class Lead(BaseModel):
    """A lead's current stage and score."""

    model_config = ConfigDict(frozen=True)

    lead_id: str
    stage: Stage
    fit: float
    engagement: float
    total: float
    as_of: Timestamp | None = Field(
        description="Latest event time the score includes; null until the first score update."
    )
    model_version: str
    updated_at: Timestamp = Field(description="When pipeline last changed this lead.")
    valued_at: Timestamp = Field(
        description=(
            "The moment engagement and total are valued at: the request's time (or its "
            "as_of), engagement decayed to it; the lead's latest event when that is later."
        )
    )


class LeadPage(BaseModel):
    items: list[Lead]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last page."
    )


class RecordedStageChange(StageChange):
    """A stage change as recorded: the Kafka record, its feed position and when it was stored."""

    position: int = Field(description="Feed position: only grows; use it as ?after= to poll.")
    recorded_at: Timestamp


class StageHistory(BaseModel):
    lead_id: str
    items: list[RecordedStageChange] = Field(description="The lead's stage changes by sequence.")


class StageChangeFeed(BaseModel):
    items: list[RecordedStageChange]
    next_after: int = Field(
        description="Pass as ?after= on the next poll (unchanged when there was nothing new)."
    )


class ScoreBreakdown(BaseModel):
    """The per-rule explanation of a lead's newest score update."""

    model_config = ConfigDict(frozen=True)

    lead_id: str
    sequence: int
    fit: float
    engagement: float
    total: float
    as_of: Timestamp
    model_version: str
    breakdown: list[RuleContribution]
    updated_at: Timestamp


class FunnelStage(BaseModel):
    stage: Stage
    current: int = Field(description="Leads in this stage now.")
    reached: int = Field(
        description=(
            "Leads that ever reached this stage or a later one of lead -> prospect -> "
            "opportunity -> customer (for disqualified: ever disqualified)."
        )
    )


class StageConversion(BaseModel):
    from_stage: Stage
    to_stage: Stage
    rate: float | None = Field(
        description=(
            "reached(to_stage) / reached(from_stage): the share of leads that got at least "
            "as far as from_stage and went on to to_stage; null when none reached from_stage."
        )
    )


class SourceFunnel(BaseModel):
    """The funnel of the leads one source created."""

    source: str | None = Field(
        description="The source of the event that created the leads; null when it named none."
    )
    total_leads: int
    stages: list[FunnelStage]
    conversions: list[StageConversion]


class Funnel(BaseModel):
    total_leads: int
    stages: list[FunnelStage]
    conversions: list[StageConversion]
    breakdown: list[SourceFunnel] | None = Field(
        default=None,
        description=(
            "With ?by=source: the same funnel per source that created the leads, sources "
            "in order, unknown (null) last; null otherwise."
        ),
    )

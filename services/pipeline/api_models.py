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


class LeadAnswer(Lead):
    """One lead, as ``GET /v1/leads/{lead_id}`` answers it: by its own id or an alias."""

    requested_alias: str | None = Field(
        default=None,
        description=(
            "The id the request named when it is an alias of this lead (an anonymous id "
            "merged into it); null when the request named the lead's own id."
        ),
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


class LeadMerge(BaseModel):
    """An anonymous id merged into the lead: its events are the lead's since (§5.12)."""

    merged_from: str = Field(description="The anonymous id, now an alias of the lead.")
    merge_id: str = Field(
        description="The merge request's event id: trigger_event_id of the merge's score update."
    )
    merged_at: Timestamp = Field(
        description="as_of of the merge's score update: the lead's latest event time then."
    )
    recorded_at: Timestamp


class StageHistory(BaseModel):
    lead_id: str
    requested_alias: str | None = Field(
        default=None,
        description=(
            "The id the request named when it is an alias of this lead (an anonymous id "
            "merged into it); null when the request named the lead's own id."
        ),
    )
    items: list[RecordedStageChange] = Field(description="The lead's stage changes by sequence.")
    merges: list[LeadMerge] = Field(
        default_factory=list,
        description=(
            "The anonymous ids merged into the lead, oldest first; their own stage changes "
            "are not kept, their events count in the lead's score."
        ),
    )


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
    requested_alias: str | None = Field(
        default=None,
        description=(
            "The id the request named when it is an alias of this lead (an anonymous id "
            "merged into it); null when the request named the lead's own id."
        ),
    )


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

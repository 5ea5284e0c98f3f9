"""The shapes the analytics routes serve (definitions: :mod:`services.pipeline.analytics`)."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from services.pipeline.analytics import Interval, Period
from shared.api_models import Timestamp
from shared.events import Stage

_NEAREST_RANK = "nearest rank; null when there are none"


class Window(BaseModel):
    """The range asked for, echoed; null for a bound not given."""

    model_config = ConfigDict(populate_by_name=True)

    from_: Timestamp | None = Field(alias="from", description="Inclusive lower bound.")
    to: Timestamp | None = Field(description="Exclusive upper bound.")


class DurationSpread(BaseModel):
    count: int = Field(description="Stays measured.")
    median_seconds: float | None = Field(description=f"Median, {_NEAREST_RANK}.")
    p90_seconds: float | None = Field(description=f"90th percentile, {_NEAREST_RANK}.")


class StageTime(BaseModel):
    stage: Stage
    finished: DurationSpread = Field(description="Stays that ended with a next change.")
    open: DurationSpread = Field(description="Stays still going, measured up to as_of.")


class TimeInStage(Window):
    as_of: Timestamp = Field(description="When open stays were measured up to.")
    stages: list[StageTime] = Field(description="Every stage, in funnel order.")


class VelocityStep(BaseModel):
    from_stage: Stage
    to_stage: Stage
    leads: int = Field(description="Leads that entered in the range and reached to_stage.")
    median_days: float | None = Field(
        description=f"Days from reaching from_stage to reaching to_stage; median, {_NEAREST_RANK}."
    )
    p90_days: float | None = Field(description=f"The same, 90th percentile, {_NEAREST_RANK}.")


class Journey(BaseModel):
    leads: int = Field(description="Leads that entered in the range and became customers.")
    median_days: float | None = Field(
        description=f"Days from entering to becoming a customer; median, {_NEAREST_RANK}."
    )
    p90_days: float | None = Field(description=f"The same, 90th percentile, {_NEAREST_RANK}.")


class Velocity(Window):
    steps: list[VelocityStep] = Field(
        description="lead -> prospect, prospect -> opportunity, opportunity -> customer."
    )
    lead_to_customer: Journey


class Reached(BaseModel):
    leads: int = Field(description="Leads of the cohort that reached the stage (or a later one).")
    share: float = Field(description="leads / the cohort's leads.")


class Cohort(BaseModel):
    start: date = Field(description="First day of the period (UTC; weeks start on Monday).")
    leads: int = Field(description="Leads that entered in the period (and the range).")
    reached: dict[Stage, Reached] = Field(description="By each stage of `stages`.")


class Cohorts(Window):
    period: Period
    stages: list[Stage] = Field(description="The stages each cohort is followed into.")
    cohorts: list[Cohort] = Field(description="Periods holding at least one lead, oldest first.")


class Transition(BaseModel):
    from_stage: Stage | None = Field(description="Null for the change that created the lead.")
    to_stage: Stage
    count: int


class ChangeBucket(BaseModel):
    start: Timestamp = Field(description="Start of the interval (UTC; weeks start on Monday).")
    total: int
    transitions: list[Transition] = Field(description="By (from_stage, to_stage), most first.")


class StageChangeCounts(Window):
    interval: Interval
    buckets: list[ChangeBucket] = Field(
        description="Intervals holding at least one change, oldest first."
    )

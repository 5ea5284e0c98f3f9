"""The funnel analytics routes: ``/v1/funnel`` with a date range and a breakdown by source,
and ``/v1/analytics/*`` (time in stage, velocity, cohorts, stage changes over time).

Definitions (entered, reached, stay, percentile): :mod:`services.pipeline.analytics`;
the SQL: :mod:`services.pipeline.analytics_queries`. Every route reads only.
"""

# No ``from __future__ import annotations``: the routes' parameter types are built inside
# install_analytics, and FastAPI can only resolve string annotations from globals.
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Query, Response
from pydantic import AfterValidator, AwareDatetime, BeforeValidator
from sqlalchemy.ext.asyncio import AsyncSession

from services.pipeline import analytics_queries as queries
from services.pipeline.analytics import Interval, Period, TimeRange
from services.pipeline.analytics_models import Cohorts, StageChangeCounts, TimeInStage, Velocity
from services.pipeline.api_models import Funnel
from shared.errors import invalid_query
from shared.events import RFC3339_PATTERN

_RFC3339 = re.compile(RFC3339_PATTERN)
_RFC3339_MESSAGE = "must be an RFC 3339 date-time with a UTC offset, e.g. 2026-12-01T00:00:00Z"


def _rfc3339(value: object) -> object:
    """Dates without a time or offset would be a guess about the zone: refused."""
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError(_RFC3339_MESSAGE)
    return value


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00
        raise ValueError("is out of range once converted to UTC") from None


Moment = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_utc)]

_FROM_DESCRIPTION = "Inclusive lower bound, RFC 3339 (e.g. `2026-11-01T00:00:00Z`); open if absent."
_TO_DESCRIPTION = "Exclusive upper bound, RFC 3339; open if absent. Must be later than `from`."

From = Annotated[
    Moment | None,
    Query(
        alias="from",
        description=_FROM_DESCRIPTION,
        openapi_examples={"november": {"value": "2026-11-01T00:00:00Z"}},
    ),
]
To = Annotated[
    Moment | None,
    Query(
        alias="to",
        description=_TO_DESCRIPTION,
        openapi_examples={"december": {"value": "2026-12-01T00:00:00Z"}},
    ),
]


def _window(start: datetime | None, end: datetime | None) -> TimeRange:
    try:
        return TimeRange(start, end)
    except ValueError as exc:
        raise invalid_query("to", None if end is None else end.isoformat(), f"to {exc}") from exc


def _example(value: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {"application/json": {"example": value}}}}


_STAGES = ["lead", "prospect", "opportunity", "customer", "disqualified"]
_SPREAD = {"count": 120, "median_seconds": 172800.0, "p90_seconds": 864000.0}
_OPEN = {"count": 40, "median_seconds": 259200.0, "p90_seconds": 1728000.0}
_FUNNEL_STAGES = [
    {"stage": "lead", "current": 620, "reached": 1000},
    {"stage": "prospect", "current": 240, "reached": 380},
    {"stage": "opportunity", "current": 90, "reached": 140},
    {"stage": "customer", "current": 30, "reached": 30},
    {"stage": "disqualified", "current": 20, "reached": 25},
]
_CONVERSIONS = [
    {"from_stage": "lead", "to_stage": "prospect", "rate": 0.38},
    {"from_stage": "prospect", "to_stage": "opportunity", "rate": 0.368},
    {"from_stage": "opportunity", "to_stage": "customer", "rate": 0.214},
]
FUNNEL_EXAMPLE = {
    "total_leads": 1000,
    "stages": _FUNNEL_STAGES,
    "conversions": _CONVERSIONS,
    "breakdown": [
        {
            "source": "webinar",
            "total_leads": 1000,
            "stages": _FUNNEL_STAGES,
            "conversions": _CONVERSIONS,
        }
    ],
}
TIME_IN_STAGE_EXAMPLE = {
    "from": "2026-11-01T00:00:00Z",
    "to": "2026-12-01T00:00:00Z",
    "as_of": "2026-12-02T09:00:00Z",
    "stages": [{"stage": s, "finished": _SPREAD, "open": _OPEN} for s in _STAGES],
}
VELOCITY_EXAMPLE = {
    "from": "2026-11-01T00:00:00Z",
    "to": "2026-12-01T00:00:00Z",
    "steps": [
        {
            "from_stage": "lead",
            "to_stage": "prospect",
            "leads": 380,
            "median_days": 3.5,
            "p90_days": 12.0,
        },
        {
            "from_stage": "prospect",
            "to_stage": "opportunity",
            "leads": 140,
            "median_days": 6.25,
            "p90_days": 20.0,
        },
        {
            "from_stage": "opportunity",
            "to_stage": "customer",
            "leads": 30,
            "median_days": 14.0,
            "p90_days": 41.5,
        },
    ],
    "lead_to_customer": {"leads": 30, "median_days": 27.0, "p90_days": 60.0},
}
COHORTS_EXAMPLE = {
    "from": None,
    "to": None,
    "period": "week",
    "stages": ["prospect", "opportunity", "customer"],
    "cohorts": [
        {
            "start": "2026-11-30",
            "leads": 200,
            "reached": {
                "prospect": {"leads": 100, "share": 0.5},
                "opportunity": {"leads": 30, "share": 0.15},
                "customer": {"leads": 6, "share": 0.03},
            },
        }
    ],
}
STAGE_CHANGES_EXAMPLE = {
    "from": "2026-12-01T00:00:00Z",
    "to": None,
    "interval": "day",
    "buckets": [
        {
            "start": "2026-12-01T00:00:00Z",
            "total": 57,
            "transitions": [
                {"from_stage": None, "to_stage": "lead", "count": 40},
                {"from_stage": "lead", "to_stage": "prospect", "count": 12},
                {"from_stage": "prospect", "to_stage": "opportunity", "count": 5},
            ],
        }
    ],
}


def install_analytics(
    app: FastAPI, session: Callable[..., Any], dependencies: Sequence[Any] = ()
) -> None:
    """Add the analytics routes to ``app``, guarded by ``dependencies``; ``session`` is the
    app's dependency giving one request's session."""
    Session = Annotated[AsyncSession, Depends(session)]
    guarded = list(dependencies)

    @app.get(
        "/v1/funnel",
        dependencies=guarded,
        summary="Leads per stage, how far they got, and conversion between stages",
        description=(
            "Of every lead, or with `from`/`to` of the leads that **entered** (their first "
            "stage change happened) in `[from, to)`: how many are in each stage now, how "
            "many **reached** each stage (reaching a later stage of lead -> prospect -> "
            "opportunity -> customer counts as passing the ones before; disqualifying a "
            "lead does not undo how far it got), and conversion between forward stages "
            "(`reached(b) / reached(a)`). With `by=source`, the same per source of the event "
            "that created the leads. A lead with no recorded stage change yet is counted "
            "only without `from` and `to`."
        ),
        responses=_example(FUNNEL_EXAMPLE),
        tags=["funnel"],
    )
    async def get_funnel(
        db: Session,
        start: From = None,
        end: To = None,
        by: Annotated[
            Literal["source"] | None,
            Query(description="`source`: add a breakdown by the source that created the leads."),
        ] = None,
    ) -> Funnel:
        return await queries.funnel(db, _window(start, end), by_source=by == "source")

    @app.get(
        "/v1/analytics/time-in-stage",
        dependencies=guarded,
        summary="Median and p90 time spent in each stage, finished and open stays apart",
        description=(
            "A **stay** runs from the stage change that put a lead in a stage to its next "
            "change (finished), or to `as_of` when there is none yet (open). Of the stays "
            "that began in `[from, to)`, per stage: how many, and the median and 90th "
            "percentile of their length in seconds (nearest rank: the `ceil(p * n)`-th "
            "shortest). Open stays that began after `as_of` count as zero seconds."
        ),
        responses=_example(TIME_IN_STAGE_EXAMPLE),
        tags=["analytics"],
    )
    async def time_in_stage(
        db: Session,
        start: From = None,
        end: To = None,
        as_of: Annotated[
            Moment | None,
            Query(description="Measure open stays up to this time (RFC 3339); default now."),
        ] = None,
    ) -> TimeInStage:
        moment = datetime.now(UTC) if as_of is None else as_of
        return await queries.time_in_stage(db, _window(start, end), moment)

    @app.get(
        "/v1/analytics/velocity",
        dependencies=guarded,
        summary="Median days lead -> prospect -> opportunity -> customer",
        description=(
            "Of the leads that entered in `[from, to)`: for each step, the leads that "
            "reached its later stage and the median (and p90) days from reaching the "
            "earlier one, nearest rank. A lead *reaches* a stage at its first change into "
            "that stage or a later one, so a lead that skipped a stage passed it in no time."
        ),
        responses=_example(VELOCITY_EXAMPLE),
        tags=["analytics"],
    )
    async def velocity(
        db: Session,
        start: From = None,
        end: To = None,
    ) -> Velocity:
        return await queries.velocity(db, _window(start, end))

    @app.get(
        "/v1/analytics/cohorts",
        dependencies=guarded,
        summary="Leads by the period they entered in, and the share that reached each stage",
        description=(
            "Cohorts of the leads that entered in `[from, to)`, by the UTC day, week "
            "(starting Monday) or month they entered in; for each, how many reached "
            "prospect, opportunity and customer (or a later stage) and the share of the "
            "cohort that is. A range that cuts a period leaves that cohort partial."
        ),
        responses=_example(COHORTS_EXAMPLE),
        tags=["analytics"],
    )
    async def cohorts(
        db: Session,
        period: Annotated[Period, Query(description="How to group the cohorts.")] = Period.WEEK,
        start: From = None,
        end: To = None,
    ) -> Cohorts:
        return await queries.cohorts(db, _window(start, end), period)

    @app.get(
        "/v1/analytics/stage-changes",
        dependencies=guarded,
        response_model=StageChangeCounts,
        summary="Stage changes per interval and per (from, to)",
        description=(
            "The stage changes that happened (`occurred_at`) in `[from, to)`, counted per "
            "UTC hour, day or week (starting Monday) and per `(from_stage, to_stage)`; "
            "`from_stage` is null for the change that created a lead. Only intervals "
            "holding a change are listed."
        ),
        responses=_example(STAGE_CHANGES_EXAMPLE),
        tags=["analytics"],
    )
    async def stage_changes(
        db: Session,
        interval: Annotated[Interval, Query(description="How long each bucket is.")] = Interval.DAY,
        start: From = None,
        end: To = None,
    ) -> Response:
        # served as built: thousands of transitions, typed where they are read
        document = await queries.stage_changes(db, _window(start, end), interval)
        return Response(orjson.dumps(document), media_type="application/json")

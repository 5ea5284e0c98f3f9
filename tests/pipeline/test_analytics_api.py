"""The analytics routes over HTTP: shapes, parameters and the errors bad ones get."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline import store
from services.pipeline.analytics_models import StageChangeCounts
from shared.events import Stage
from tests.pipeline.records import T0, stage_change

Sessions = async_sessionmaker[AsyncSession]


async def seed(sessions: Sessions) -> None:
    """ada: created by a webinar at T0+1min, prospect at +2min; bob: a form, still a lead."""
    ada = [
        stage_change("ada", 1, Stage.LEAD).model_copy(update={"source": "webinar"}),
        stage_change("ada", 2, Stage.PROSPECT, Stage.LEAD),
    ]
    bob = stage_change("bob", 1, Stage.LEAD).model_copy(
        update={"source": "form", "occurred_at": T0 + timedelta(days=3)}
    )
    await store.record_batch(sessions, [*ada, bob], [])


def when(delta: timedelta) -> str:
    return quote((T0 + delta).isoformat().replace("+00:00", "Z"))


async def test_the_funnel_takes_a_range_and_a_breakdown_by_source(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    await seed(sessions)
    every = (await client.get("/v1/funnel")).json()
    assert every["total_leads"] == 2
    assert every["breakdown"] is None

    first_day = await client.get(f"/v1/funnel?from={when(timedelta())}&to={when(timedelta(1))}")
    assert first_day.status_code == 200
    assert first_day.json()["total_leads"] == 1  # bob entered on day 3

    split = (await client.get("/v1/funnel?by=source")).json()
    assert [(b["source"], b["total_leads"]) for b in split["breakdown"]] == [
        ("form", 1),
        ("webinar", 1),
    ]
    webinar = {s["stage"]: s["reached"] for s in split["breakdown"][1]["stages"]}
    assert (webinar["lead"], webinar["prospect"], webinar["opportunity"]) == (1, 1, 0)


async def test_each_analytics_route_answers_its_documented_shape(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    await seed(sessions)
    as_of = when(timedelta(days=10))
    stays = (await client.get(f"/v1/analytics/time-in-stage?as_of={as_of}")).json()
    assert [s["stage"] for s in stays["stages"]] == [s.value for s in Stage]
    lead = stays["stages"][0]
    assert lead["finished"] == {"count": 1, "median_seconds": 60.0, "p90_seconds": 60.0}
    assert lead["open"]["count"] == 1  # bob, since day 3: 7 days by as_of
    assert lead["open"]["median_seconds"] == 7 * 86400.0
    assert stays["from"] is None
    assert stays["as_of"] == "2026-11-11T09:00:00Z"

    speed = (await client.get("/v1/analytics/velocity")).json()
    assert [(s["from_stage"], s["to_stage"], s["leads"]) for s in speed["steps"]] == [
        ("lead", "prospect", 1),
        ("prospect", "opportunity", 0),
        ("opportunity", "customer", 0),
    ]
    assert speed["steps"][0]["median_days"] == pytest.approx(60 / 86400)
    assert speed["lead_to_customer"] == {"leads": 0, "median_days": None, "p90_days": None}

    weekly = (await client.get("/v1/analytics/cohorts?period=week")).json()
    assert weekly["stages"] == ["prospect", "opportunity", "customer"]
    # T0 is Sunday 2026-11-01 (week of Monday 10-26); bob entered Wednesday 11-04
    assert [(c["start"], c["leads"]) for c in weekly["cohorts"]] == [
        ("2026-10-26", 1),
        ("2026-11-02", 1),
    ]
    assert weekly["cohorts"][0]["reached"]["prospect"] == {"leads": 1, "share": 1.0}

    daily = (await client.get("/v1/analytics/stage-changes?interval=day")).json()
    assert daily["interval"] == "day"
    StageChangeCounts.model_validate(daily)  # served as built: still the documented shape
    assert [(b["start"], b["total"]) for b in daily["buckets"]] == [
        ("2026-11-01T00:00:00Z", 2),
        ("2026-11-04T00:00:00Z", 1),
    ]
    assert daily["buckets"][0]["transitions"] == [
        {"from_stage": None, "to_stage": "lead", "count": 1},
        {"from_stage": "lead", "to_stage": "prospect", "count": 1},
    ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("/v1/funnel?from=2026-11-01", "from"),  # a date without a time: which zone?
        ("/v1/funnel?to=2026-11-01T00:00:00", "to"),  # no offset
        ("/v1/funnel?from=1700000000", "from"),
        ("/v1/funnel?by=campaign", "by"),
        ("/v1/funnel?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", "to"),
        ("/v1/analytics/velocity?from=2026-11-01T00:00:00Z&to=2026-11-01T00:00:00Z", "to"),
        ("/v1/analytics/time-in-stage?as_of=yesterday", "as_of"),
        ("/v1/analytics/cohorts?period=year", "period"),
        ("/v1/analytics/stage-changes?interval=minute", "interval"),
        ("/v1/analytics/stage-changes?from=2026-13-01T00:00:00Z", "from"),
    ],
)
async def test_bad_parameters_are_422_naming_the_field(
    client: httpx.AsyncClient, query: str, field: str
) -> None:
    response = await client.get(query)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", field]
    assert error["msg"]


async def test_offsets_are_read_as_the_instant_they_name(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    await seed(sessions)
    # 2026-11-01T10:01:30+01:00 is 09:01:30Z: after ada's first change (09:01), not her second
    late = quote("2026-11-01T10:01:30+01:00")
    stays = (await client.get(f"/v1/analytics/stage-changes?to={late}")).json()
    assert [b["total"] for b in stays["buckets"]] == [1]


async def test_a_bound_beyond_the_calendar_once_in_utc_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/analytics/velocity?from={quote('0001-01-01T00:00:00+01:00')}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "from"]

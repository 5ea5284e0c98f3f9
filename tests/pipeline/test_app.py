"""pipeline's REST API over the real store, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline import store
from services.pipeline.app import create_app
from services.pipeline.settings import PipelineSettings
from shared.api_keys import format_line, key_digest
from shared.events import Stage
from tests.pipeline.records import account_score, score_update, stage_change

Sessions = async_sessionmaker[AsyncSession]


async def seed(sessions: Sessions) -> None:
    await store.record_batch(
        sessions,
        [
            stage_change("ada.lovelace@example.com", 1, Stage.LEAD),
            stage_change("ada.lovelace@example.com", 2, Stage.PROSPECT, Stage.LEAD),
            stage_change("crm/42/history", 3, Stage.OPPORTUNITY, Stage.LEAD, total=90.0),
        ],
        [
            score_update("ada.lovelace@example.com", 3, 72.5, Stage.PROSPECT),
            score_update("bob@example.org", 1, 12.0),
        ],
        account_scores=[account_score("example.com", 1, {"ada.lovelace@example.com": 72.5})],
    )


async def test_a_lead_by_id(client: httpx.AsyncClient, sessions: Sessions) -> None:
    await seed(sessions)
    response = await client.get(
        "/v1/leads/ada.lovelace@example.com", params={"as_of": "2026-12-01T00:00:00Z"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "lead_id": "ada.lovelace@example.com",
        "stage": "prospect",
        "fit": 54.375,
        "engagement": 18.125,  # a score without a half-life does not decay
        "total": 72.5,
        "as_of": "2026-11-01T09:03:00Z",
        "model_version": "default-1",
        "updated_at": body["updated_at"],
        "valued_at": "2026-12-01T00:00:00Z",
        "requested_alias": None,
    }
    assert body["updated_at"].endswith("Z")


async def test_a_lead_is_found_by_any_spelling_of_its_address(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    """The rule ingest keys leads by (shared/lead_ids.py) applies to lookups too."""
    await seed(sessions)
    for path in ("", "/history", "/score"):
        response = await client.get(f"/v1/leads/{quote(' Ada.Lovelace@Example.COM ')}{path}")
        assert response.status_code == 200, path
        assert response.json()["lead_id"] == "ada.lovelace@example.com"


async def test_lead_ids_with_slashes_and_reserved_characters(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    await seed(sessions)
    await store.record_batch(
        sessions, [], [score_update("we?ird #id%", 1, 1.0), score_update("org/7/ada@x.io", 1, 2.0)]
    )

    slashed = await client.get("/v1/leads/org/7/ada@x.io")
    assert slashed.status_code == 200
    assert slashed.json()["lead_id"] == "org/7/ada@x.io"
    weird = await client.get(f"/v1/leads/{quote('we?ird #id%', safe='')}")
    assert weird.status_code == 200
    assert weird.json()["lead_id"] == "we?ird #id%"

    # The documented limit: a suffix is the route's, so "crm/42/history" is only reachable
    # through its own suffixed routes (and the listing).
    assert (await client.get("/v1/leads/crm/42/history")).status_code == 404  # lead "crm/42"
    history = await client.get("/v1/leads/crm/42/history/history")
    assert [c["lead_id"] for c in history.json()["items"]] == ["crm/42/history"]


async def test_unknown_leads_are_404_with_a_clear_detail(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    await seed(sessions)
    for path in ("", "/history", "/score"):
        response = await client.get(f"/v1/leads/nobody@example.com{path}")
        assert response.status_code == 404, path
        assert response.json()["detail"] == "lead 'nobody@example.com' is unknown"

    # known (through a stage change), but no score update recorded yet
    no_breakdown = await client.get("/v1/leads/crm/42/history/score")
    assert no_breakdown.status_code == 404
    assert "no score breakdown yet" in no_breakdown.json()["detail"]


async def test_history_and_score(client: httpx.AsyncClient, sessions: Sessions) -> None:
    await seed(sessions)
    history = (await client.get("/v1/leads/ada.lovelace@example.com/history")).json()
    assert [(c["sequence"], c["from_stage"], c["to_stage"]) for c in history["items"]] == [
        (1, None, "lead"),
        (2, "lead", "prospect"),
    ]
    first = history["items"][0]
    assert first["score"] == {"fit": 30.0, "engagement": 30.0, "total": 60.0}
    assert first["occurred_at"] == "2026-11-01T09:01:00Z"
    assert {"position", "recorded_at", "change_id", "trigger_event_id"} <= first.keys()

    score = (await client.get("/v1/leads/ada.lovelace@example.com/score")).json()
    assert score["sequence"] == 3
    assert score["total"] == 72.5
    assert [item["axis"] for item in score["breakdown"]] == ["fit", "engagement"]
    assert score["breakdown"][1] == {
        "rule": "email.clicked",
        "axis": "engagement",
        "points": 18.125,
        "count": 3,
    }


async def test_listing_pages_through_every_lead_by_score(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    totals = [5.0, 80.0, 80.0, 80.0, 42.0, 42.0, -3.0]
    await store.record_batch(
        sessions,
        [],
        [score_update(f"lead{i}", 1, t, Stage.PROSPECT) for i, t in enumerate(totals)],
    )
    seen: list[tuple[float, str]] = []
    params: dict[str, str | int] = {"limit": 2}
    while True:
        page = (await client.get("/v1/leads", params=params)).json()
        seen.extend((item["total"], item["lead_id"]) for item in page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == sorted(
        ((t, f"lead{i}") for i, t in enumerate(totals)), key=lambda k: (-k[0], k[1])
    )

    filtered = (await client.get("/v1/leads", params={"min_score": 42, "stage": "prospect"})).json()
    assert [item["lead_id"] for item in filtered["items"]] == [
        "lead1",
        "lead2",
        "lead3",
        "lead4",
        "lead5",
    ]
    assert filtered["next_cursor"] is None
    none = (await client.get("/v1/leads", params={"stage": "customer"})).json()
    assert none == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"stage": "champion"}, "stage"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"min_score": "high"}, "min_score"),
        ({"min_score": "nan"}, "min_score"),
        ({"min_score": "inf"}, "min_score"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "WyJhIiwiYiJd"}, "cursor"),
    ],
)
async def test_invalid_listing_filters_are_422_naming_the_field(
    client: httpx.AsyncClient, query: dict[str, str | int], field: str
) -> None:
    response = await client.get("/v1/leads", params=query)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["query", field]]


async def test_funnel(client: httpx.AsyncClient, sessions: Sessions) -> None:
    await seed(sessions)
    funnel = (await client.get("/v1/funnel")).json()
    assert funnel["total_leads"] == 3
    stages = {s["stage"]: (s["current"], s["reached"]) for s in funnel["stages"]}
    assert stages == {
        "lead": (1, 3),
        "prospect": (1, 2),
        "opportunity": (1, 1),
        "customer": (0, 0),
        "disqualified": (0, 0),
    }
    assert funnel["conversions"] == [
        {"from_stage": "lead", "to_stage": "prospect", "rate": 2 / 3},
        {"from_stage": "prospect", "to_stage": "opportunity", "rate": 0.5},
        {"from_stage": "opportunity", "to_stage": "customer", "rate": 0.0},
    ]


async def test_the_stage_change_feed(client: httpx.AsyncClient, sessions: Sessions) -> None:
    await seed(sessions)
    first = (await client.get("/v1/stage-changes", params={"limit": 2})).json()
    assert [c["sequence"] for c in first["items"]] == [1, 2]
    assert first["next_after"] == first["items"][-1]["position"]
    rest = (await client.get("/v1/stage-changes", params={"after": first["next_after"]})).json()
    assert [c["lead_id"] for c in rest["items"]] == ["crm/42/history"]
    empty = (await client.get("/v1/stage-changes", params={"after": rest["next_after"]})).json()
    assert empty == {"items": [], "next_after": rest["next_after"]}

    bad = await client.get("/v1/stage-changes", params={"after": -1, "limit": 5000})
    assert bad.status_code == 422
    assert [e["loc"] for e in bad.json()["detail"]] == [["query", "after"], ["query", "limit"]]

    # beyond 64 bits: refused by name, not an overflow in the database driver (was a 500)
    huge = await client.get("/v1/stage-changes", params={"after": 2**63})
    assert huge.status_code == 422
    assert [e["loc"] for e in huge.json()["detail"]] == [["query", "after"]]


@pytest.mark.parametrize("suffix", ["", "/history", "/score"])
async def test_lead_ids_with_control_characters_are_422(
    client: httpx.AsyncClient, suffix: str
) -> None:
    # No event can name such a lead; and PostgreSQL text cannot hold NUL (was a 500 there).
    response = await client.get(f"/v1/leads/ada%00x{suffix}")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["path", "lead_id"]
    assert "control characters" in error["msg"]


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": True}}


async def test_not_ready_when_the_database_is_unreachable(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "leadflow.db"
    settings = PipelineSettings(
        database_url=f"sqlite+aiosqlite:///{missing}",
        migrate_on_start=False,
        pipeline_consume=False,
    )
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pipeline") as client:
            ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": False}


# --- with API keys: every read needs leads:read --------------------------------------------

READER = "lf_pipeline-reader"
MAILER = "lf_pipeline-mailer"
KEYS = ";".join(
    format_line(name, scopes, key_digest(key.encode()))
    for name, key, scopes in [
        ("dashboard", READER, ["leads:read"]),
        ("mailer", MAILER, ["events:write"]),
    ]
)
READS = [
    "/v1/leads",
    "/v1/leads/ada.lovelace@example.com",
    "/v1/leads/ada.lovelace@example.com/history",
    "/v1/leads/ada.lovelace@example.com/score",
    "/v1/funnel",
    "/v1/stage-changes",
    "/v1/analytics/time-in-stage",
    "/v1/analytics/velocity",
    "/v1/analytics/cohorts",
    "/v1/analytics/stage-changes",
    "/v1/accounts",
    "/v1/accounts/example.com",
]
"""Plus the live stream, whose scope test_stream.py checks on a real server."""


@pytest.fixture
async def protected(database_url: str, sessions: Sessions) -> AsyncIterator[httpx.AsyncClient]:
    settings = PipelineSettings(database_url=database_url, pipeline_consume=False, api_keys=KEYS)
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pipeline") as client:
            yield client


@pytest.mark.parametrize("path", READS)
async def test_every_read_needs_leads_read(
    protected: httpx.AsyncClient, sessions: Sessions, path: str
) -> None:
    await seed(sessions)
    anonymous = await protected.get(path)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    mailer = await protected.get(path, headers={"X-API-Key": MAILER})
    assert mailer.status_code == 403
    assert mailer.json()["detail"].startswith("key 'mailer' lacks scope leads:read needed for GET")
    assert "ada.lovelace" not in mailer.text
    reader = await protected.get(path, headers={"Authorization": f"Bearer {READER}"})
    assert reader.status_code == 200


async def test_the_credential_is_checked_before_the_query(protected: httpx.AsyncClient) -> None:
    # an anonymous caller learns nothing of the parameters' rules
    assert (await protected.get("/v1/leads?limit=0")).status_code == 401
    with_key = await protected.get("/v1/leads?limit=0", headers={"X-API-Key": READER})
    assert with_key.status_code == 422


async def test_probes_stay_open_with_keys(protected: httpx.AsyncClient) -> None:
    assert (await protected.get("/healthz")).status_code == 200
    assert (await protected.get("/readyz")).status_code == 200


async def test_the_document_says_what_is_enforced(
    protected: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    secured = (await protected.get("/openapi.json")).json()
    assert set(secured["components"]["securitySchemes"]) == {"ApiKeyHeader", "ApiKeyBearer"}
    operations = [
        (path, operation)
        for path, methods in secured["paths"].items()
        for operation in methods.values()
    ]
    api = [(p, o) for p, o in operations if p.startswith("/v1/")]
    erasure = [(p, o) for p, o in api if "erasure" in o["tags"]]
    reads = [(p, o) for p, o in api if "erasure" not in o["tags"]]
    assert len(reads) == len(READS) + 1  # the stream
    assert len(erasure) == 2  # DELETE /v1/leads/{lead_id}, GET /v1/erasures/{erase_id}
    for path, operation in api:
        scope = "admin" if "erasure" in operation["tags"] else "leads:read"
        assert operation["x-required-scope"] == scope, path
        assert {"401", "403"} <= set(operation["responses"]), path
        assert operation["security"] == [{"ApiKeyHeader": []}, {"ApiKeyBearer": []}]
    for path, operation in operations:
        if not path.startswith("/v1/"):
            assert "security" not in operation, path
    open_document = (await client.get("/openapi.json")).json()
    assert "securitySchemes" not in open_document.get("components", {})
    assert all(
        "security" not in operation and "401" not in operation["responses"]
        for methods in open_document["paths"].values()
        for operation in methods.values()
    )

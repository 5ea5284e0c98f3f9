"""An alias on the REST API, on SQLite and PostgreSQL: the lead, history and score routes
answer the known lead for the anonymous id merged into it, and say it was an alias."""

from __future__ import annotations

from urllib.parse import quote

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.events import format_time
from tests.pipeline.test_aliases import ANON, KNOWN, MERGE_ID, REASON, merge, merge_update, seed

Sessions = async_sessionmaker[AsyncSession]


async def test_the_alias_answers_the_known_lead(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    await seed(sessions)
    before = (await client.get(f"/v1/leads/{ANON}")).json()
    assert (before["lead_id"], before["requested_alias"]) == (ANON, None)

    await merge(sessions)

    at = {"as_of": "2026-12-01T00:00:00Z"}
    known = (await client.get(f"/v1/leads/{KNOWN}", params=at)).json()
    response = await client.get(f"/v1/leads/{quote(f' {ANON} ')}", params=at)  # trimmed
    assert response.status_code == 200
    assert response.json() == {**known, "requested_alias": ANON}
    assert (known["lead_id"], known["total"], known["requested_alias"]) == (KNOWN, 70.0, None)


async def test_the_history_shows_the_merge_by_either_id(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    await seed(sessions)
    await merge(sessions)

    by_known = (await client.get(f"/v1/leads/{KNOWN}/history")).json()
    by_alias = (await client.get(f"/v1/leads/{ANON}/history")).json()

    assert by_alias == {**by_known, "requested_alias": ANON}
    assert by_known["lead_id"] == KNOWN
    assert [item["reason"] for item in by_known["items"]] == ["fit 60 >= 50", REASON]
    [merged] = by_known["merges"]
    assert merged == {
        "merged_from": ANON,
        "merge_id": MERGE_ID,
        "merged_at": format_time(merge_update(2).as_of),
        "recorded_at": merged["recorded_at"],
    }


async def test_the_score_by_the_alias_is_the_known_leads(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    await seed(sessions)
    await merge(sessions)

    by_known = (await client.get(f"/v1/leads/{KNOWN}/score")).json()
    by_alias = await client.get(f"/v1/leads/{ANON}/score")

    assert by_alias.status_code == 200
    assert by_alias.json() == {**by_known, "requested_alias": ANON}
    assert (by_known["sequence"], by_known["total"]) == (2, 70.0)


async def test_an_unknown_anonymous_id_is_404_on_every_route(
    client: httpx.AsyncClient, sessions: Sessions
) -> None:
    await seed(sessions)
    await merge(sessions)
    for path in ("", "/history", "/score"):
        response = await client.get(f"/v1/leads/anon:nobody{path}")
        assert response.status_code == 404, path
        assert response.json() == {"detail": "lead 'anon:nobody' is unknown"}

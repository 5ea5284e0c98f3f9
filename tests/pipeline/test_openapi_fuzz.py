"""Bad HTTP input to pipeline (reliability scenario 7): schemathesis against its OpenAPI document.

A real server on loopback, over SQLite and over PostgreSQL, seeded with the
leads the document gives as examples (ids with ``@`` and ``/``), so the 200
paths are exercised as well as the 4xx ones.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline import store
from services.pipeline.app import create_app
from services.pipeline.settings import PipelineSettings
from shared.events import Stage
from tests.openapi_fuzz import (
    FUZZ_SETTINGS,
    HOSTILE_SETTINGS,
    HUGE_NUMBERS,
    ODD_TEXT,
    checks,
    config,
    hostile_cursors,
    hostile_json,
    serving_documented,
)
from tests.pipeline.records import score_update, stage_change

pytestmark = pytest.mark.faults

# As in tests/ingest/test_openapi_fuzz.py: the app's own document, checked against the served one.
DOCUMENT = create_app(PipelineSettings()).openapi()
# DELETE writes erase records to Kafka, which this server has none of: its bad input is
# covered by tests/pipeline/test_erasures_api.py. The live stream never ends a 200
# response, which a fuzzer waits for; its bad input (the Last-Event-ID header, ?after=)
# is tested in test_stream.py.
schema = (
    schemathesis.openapi.from_dict(DOCUMENT, config=config())
    .exclude(method="DELETE")
    .exclude(path="/v1/stream/stage-changes")
)

# JSON Schema cannot say which cursors this API issued.
# Nor that a range ends after it starts, or which times fall off the calendar in UTC.
CHECKS = checks(
    "is not one this API issued",
    "cannot be combined",
    "must be later than from",
    "is out of range once converted to UTC",
)

ADA = "ada@example.com"
SLASHED = "org/7/ada@x.io"
"""The document's example lead ids."""


@pytest.fixture
async def seeded(database_url: str, sessions: async_sessionmaker[AsyncSession]) -> str:
    """The test database (``sessions`` emptied it) with both example leads and one more."""
    await store.record_batch(
        sessions,
        [
            stage_change(ADA, 1, Stage.LEAD),
            stage_change(ADA, 2, Stage.PROSPECT, Stage.LEAD),
            stage_change(SLASHED, 1, Stage.LEAD),
            stage_change(SLASHED, 2, Stage.OPPORTUNITY, Stage.LEAD, total=90.0),
        ],
        [
            score_update(ADA, 3, 72.5, Stage.PROSPECT),
            score_update(SLASHED, 3, 90.0, Stage.OPPORTUNITY),
            score_update("bob@example.org", 1, 12.0),
        ],
    )
    return database_url


@pytest.fixture
def pipeline_url(seeded: str) -> Iterator[str]:
    # The REST API alone: the database is migrated and seeded, no consumer writes to it.
    settings = PipelineSettings(database_url=seeded, migrate_on_start=False, pipeline_consume=False)
    with serving_documented(create_app(settings), DOCUMENT) as url:
        yield url


@schema.parametrize()
@FUZZ_SETTINGS
def test_bad_input_gets_a_clear_4xx_never_a_5xx(
    case: schemathesis.Case[Any], pipeline_url: str
) -> None:
    case.call_and_validate(base_url=pipeline_url, checks=CHECKS)


# --- deeper strategies than the document suggests --------------------------------------


def percent_encoded(text: str) -> str:
    """``text`` as a URL part, lone surrogates included (as the invalid UTF-8 they become)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def cursor_named(response: httpx.Response) -> bool:
    detail = response.json()["detail"]
    return any(error["loc"] == ["query", "cursor"] for error in detail)


@given(cursor=hostile_cursors())
@HOSTILE_SETTINGS
def test_any_cursor_not_issued_here_is_a_422_naming_the_cursor(
    cursor: str, pipeline_url: str
) -> None:
    response = httpx.get(f"{pipeline_url}/v1/leads?cursor={percent_encoded(cursor)}")
    assert response.status_code in (200, 422), response.text[:300]
    if response.status_code == 422:
        assert cursor_named(response), response.text[:300]


@given(cursor=hostile_cursors())
@HOSTILE_SETTINGS
def test_any_change_cursor_not_issued_here_is_a_422_naming_updated_after(
    cursor: str, pipeline_url: str
) -> None:
    response = httpx.get(f"{pipeline_url}/v1/leads?updated_after={percent_encoded(cursor)}")
    assert response.status_code in (200, 422), response.text[:300]
    if response.status_code == 422:
        detail = response.json()["detail"]
        assert [error["loc"] for error in detail] == [["query", "updated_after"]], detail


def test_a_cursor_of_1500_brackets_is_a_422(pipeline_url: str) -> None:
    cursor = base64.urlsafe_b64encode(b"[" * 1500).decode()
    response = httpx.get(f"{pipeline_url}/v1/leads", params={"cursor": cursor})
    assert response.status_code == 422
    assert cursor_named(response)


@given(
    query=st.dictionaries(
        st.sampled_from(["min_score", "limit", "stage", "cursor", "after", "updated_after"]),
        HUGE_NUMBERS | ODD_TEXT | hostile_json().map(lambda t: t[:4096]),
        min_size=1,
    ),
    path=st.sampled_from(["/v1/leads", "/v1/stage-changes", "/v1/funnel"]),
)
@HOSTILE_SETTINGS
def test_hostile_query_values_get_a_4xx_never_a_5xx(
    query: dict[str, str], path: str, pipeline_url: str
) -> None:
    encoded = "&".join(f"{name}={percent_encoded(value)}" for name, value in query.items())
    response = httpx.get(f"{pipeline_url}{path}?{encoded}")
    if len(encoded) > PipelineSettings().http_max_header_bytes - 512:  # the rest of the head
        # a request line past the server's header limit is refused before any route
        assert response.status_code in (422, 431), response.text[:300]
    else:
        assert response.status_code in (200, 422), response.text[:300]


@given(
    lead_id=ODD_TEXT | st.text(min_size=3000, max_size=9000) | hostile_json(),
    suffix=st.sampled_from(["", "/history", "/score"]),
)
@HOSTILE_SETTINGS
def test_odd_lead_ids_get_a_404_or_422_never_a_5xx(
    lead_id: str, suffix: str, pipeline_url: str
) -> None:
    response = httpx.get(f"{pipeline_url}/v1/leads/{percent_encoded(lead_id)}{suffix}")
    # 431: the URL alone is larger than the HTTP server takes a request's head to be
    assert response.status_code in (200, 404, 422, 431), response.text[:300]
    assert len(response.content) < 64 * 1024

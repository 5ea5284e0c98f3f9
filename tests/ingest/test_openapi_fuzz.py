"""Bad HTTP input to ingest (reliability scenario 7): schemathesis against its OpenAPI document.

A real server on loopback and the real broker, so a 202 means the event is
in Kafka. API keys are configured so the 401 path is documented and
exercised: schemathesis sends the key, and checks that leaving it out is
refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.api_keys import format_line, key_digest
from shared.settings import LeadflowSettings
from tests.openapi_fuzz import (
    FUZZ_SETTINGS,
    HOSTILE_SETTINGS,
    ODD_TEXT,
    checks,
    config,
    deep_json,
    hostile_json,
    serving_documented,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

API_KEY = "lf_fuzz-key"
KEYS = format_line("fuzz", ["events:write", "crm:write"], key_digest(API_KEY.encode()))

# schemathesis.pytest.from_fixture (a schema loaded from the server in a fixture) breaks on
# pytest 9.2 (it sets Function._nodeid), so the schema is the app's own document, and the
# fixture checks that the server serves exactly that.
DOCUMENT = create_app(IngestSettings(api_keys=KEYS)).openapi()
schema = schemathesis.openapi.from_dict(
    DOCUMENT, config=config(auth={"openapi": {"ApiKeyHeader": {"api_key": API_KEY}}})
)

CHECKS = checks(
    # JSON Schema cannot compare a time with the server's clock, or count bytes of JSON.
    "is more than one day in the future",
    "is out of range once converted to UTC",
    "properties and traits take",
    "levels deep",
)


@pytest.fixture
def ingest_url(kafka_settings: LeadflowSettings) -> Iterator[str]:
    settings = IngestSettings(**{**kafka_settings.model_dump(), "api_keys": KEYS})
    with serving_documented(create_app(settings), DOCUMENT) as url:
        yield url


@schema.parametrize()
@FUZZ_SETTINGS
def test_bad_input_gets_a_clear_4xx_never_a_5xx(
    case: schemathesis.Case[Any], ingest_url: str
) -> None:
    case.call_and_validate(base_url=ingest_url, checks=CHECKS)


# --- deeper strategies than the document suggests --------------------------------------


def event_text(properties: str, extra: str = "") -> str:
    return (
        '{"type":"page.viewed","lead_id":"ada@example.com",'
        f'"occurred_at":"2026-11-20T10:00:00Z"{extra},"properties":{{"p":{properties}}}}}'
    )


def unknown_fields(count: int) -> str:
    return "".join(f',"u{i}":{i}' for i in range(count))


hostile_bodies = st.one_of(
    hostile_json(),
    hostile_json().map(event_text),
    deep_json().map(lambda t: f"[{event_text(t)}]"),
    # valid JSON at the depths where the parsers on the way give up
    st.integers(250, 258).map(lambda d: event_text("[" * d + "1" + "]" * d)),
    st.integers(0, 60_000).map(lambda n: event_text("1", unknown_fields(n))),
    ODD_TEXT.map(lambda t: event_text(orjson.dumps(t).decode())),
)


@given(body=hostile_bodies, path=st.sampled_from(["/v1/events", "/v1/events/batch"]))
@HOSTILE_SETTINGS
def test_hostile_bodies_get_a_short_4xx_or_a_202_never_a_5xx(
    body: str, path: str, ingest_url: str
) -> None:
    response = httpx.post(
        f"{ingest_url}{path}",
        content=body.encode("utf-8", "surrogatepass"),
        headers={"Content-Type": "application/json", "X-API-Key": API_KEY},
    )
    assert response.status_code in (202, 413, 422), response.text[:300]
    assert len(response.content) < 64 * 1024

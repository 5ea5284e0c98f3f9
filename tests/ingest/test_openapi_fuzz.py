"""Bad HTTP input to ingest (reliability scenario 7): schemathesis against its OpenAPI document.

A real server on loopback and the real broker, so a 202 means the event is
in Kafka. API keys are configured so the 401 path is documented and
exercised: schemathesis sends the key, and checks that leaving it out is
refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.api_keys import format_line, key_digest
from shared.settings import LeadflowSettings
from tests.openapi_fuzz import FUZZ_SETTINGS, checks, config, serving_documented

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

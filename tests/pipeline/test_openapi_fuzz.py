"""Bad HTTP input to pipeline (reliability scenario 7): schemathesis against its OpenAPI document.

A real server on loopback, over SQLite and over PostgreSQL, seeded with the
leads the document gives as examples (ids with ``@`` and ``/``), so the 200
paths are exercised as well as the 4xx ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pipeline import store
from services.pipeline.app import create_app
from services.pipeline.settings import PipelineSettings
from shared.events import Stage
from tests.openapi_fuzz import FUZZ_SETTINGS, checks, config, serving_documented
from tests.pipeline.records import score_update, stage_change

pytestmark = pytest.mark.faults

# As in tests/ingest/test_openapi_fuzz.py: the app's own document, checked against the served one.
DOCUMENT = create_app(PipelineSettings()).openapi()
# The live stream never ends a 200 response, which a fuzzer waits for; its bad input (the
# Last-Event-ID header, ?after=) is tested in test_stream.py.
schema = schemathesis.openapi.from_dict(DOCUMENT, config=config()).exclude(
    path="/v1/stream/stage-changes"
)

# JSON Schema cannot say which cursors this API issued.
CHECKS = checks("is not one this API issued", "cannot be combined")

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

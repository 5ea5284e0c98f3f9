"""The models topic on the real broker: publications read back in the order published."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.scoring.model import load_model
from services.scoring.model_topic import find_publication, read_publications, write_publication
from services.scoring.publication import Publication
from shared.settings import LeadflowSettings

pytestmark = pytest.mark.integration


async def test_publications_read_back_in_order_and_a_republished_version_keeps_its_place(
    kafka_settings: LeadflowSettings,
) -> None:
    model = load_model()
    at = datetime(2026, 12, 1, tzinfo=UTC)
    first = Publication.of(model.model_copy(update={"version": "v1"}), at)
    second = Publication.of(model.model_copy(update={"version": "v2"}), at, previous="v1")
    again = Publication.of(model.model_copy(update={"version": "v1"}), at, previous="v2")
    for publication in (first, second, again):
        await write_publication(kafka_settings, publication)

    read = await read_publications(kafka_settings)

    assert [p.version for p in read] == ["v1", "v2"]
    assert read[0].previous == "v2"  # the latest record of a version is the one kept
    found = await find_publication(kafka_settings, "v2")
    assert found is not None
    assert found.previous == "v1"
    assert await find_publication(kafka_settings, "v3") is None

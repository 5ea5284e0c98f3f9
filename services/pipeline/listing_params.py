"""The query parameters the two listings (leads and accounts) share, declared once so that
their limits, cursor formats and refusals cannot drift apart."""

from typing import Any

from fastapi import Query

from services.pipeline.settings import PipelineSettings
from shared.errors import invalid_query

SCORE_ORDER_CURSOR = Query(
    max_length=2048,
    description="next_cursor of the previous page (score order only).",
)


def page_limit(settings: PipelineSettings) -> Any:
    """The ``limit`` parameter, bounded by the installation's page size."""
    return Query(
        ge=1,
        le=settings.page_size_max,
        description=f"Items per page, 1 to {settings.page_size_max}.",
    )


def updated_after_query(noun: str, written: str) -> Any:
    """``updated_after``: URL-safe base64 as issued, which also keeps the request line
    within the server's header limit beside a long ``cursor``."""
    return Query(
        max_length=2048,
        pattern=r"^[A-Za-z0-9_-]+$",
        description=(
            f"Change order: `0` for every {noun}, else the next_cursor of the previous "
            f"page; {written} since."
        ),
    )


def refuse_cursor_beside_updated_after(cursor: str | None) -> None:
    """The two orders page differently: a score-order cursor means nothing in change order."""
    if cursor is not None:
        raise invalid_query(
            "cursor",
            cursor,
            "cursor cannot be combined with updated_after: pass the previous "
            "page's next_cursor as updated_after",
        )

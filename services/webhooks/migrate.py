"""Creating the webhooks schema when the service starts."""

from __future__ import annotations

from services.pipeline.db import create_engine
from services.webhooks.tables import Base


async def migrate(database_url: str) -> None:
    """Create the tables that are missing (the first schema; no upgrades yet)."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
    finally:
        await engine.dispose()

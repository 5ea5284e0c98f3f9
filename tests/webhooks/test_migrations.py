"""The webhooks migrations build exactly tables.py's schema, beside the pipeline's in one
database if need be, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from services.pipeline.migrate import migrate as migrate_pipeline
from services.webhooks.migrate import SCHEMA, migrate
from services.webhooks.tables import Base
from shared.database import create_engine


def _state(connection: Connection) -> tuple[str | None, list[Any], set[str]]:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "version_table": SCHEMA.version_table,
            "include_name": lambda name, kind, _: kind != "table" or name in Base.metadata.tables,
        },
    )
    tables = set(inspect(connection).get_table_names())
    return context.get_current_revision(), compare_metadata(context, Base.metadata), tables


async def schema_state(url: str) -> tuple[str | None, list[Any], set[str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_state)
    finally:
        await engine.dispose()


async def test_upgrade_builds_the_models_schema_beside_the_pipelines(
    webhooks_database: str,
) -> None:
    await migrate_pipeline(webhooks_database)
    await migrate(webhooks_database)
    await migrate(webhooks_database)  # at head: nothing to do
    revision, differences, tables = await schema_state(webhooks_database)
    assert revision == "0002"
    assert differences == []
    assert set(Base.metadata.tables) | {"leads", "alembic_version", SCHEMA.version_table} <= tables

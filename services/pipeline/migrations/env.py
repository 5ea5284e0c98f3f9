"""Alembic environment: async engines, a passed-in connection, or offline SQL.

Three ways in, one schema:

- :func:`services.pipeline.migrate.migrate` hands over an open connection in
  ``config.attributes["connection"]``; the caller's transaction commits it.
- the ``alembic`` CLI: an async engine on ``-x database_url=...``, else
  ``sqlalchemy.url``, else ``LEADFLOW_DATABASE_URL`` (the app's own setting).
- ``alembic upgrade head --sql``: the DDL as text, for a DBA to review.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from services.pipeline.migrate import MIGRATION_LOCK_KEY
from services.pipeline.settings import PipelineSettings
from services.pipeline.tables import Base

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    # Only for the alembic CLI: inside the service, logging is already configured.
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("database_url")
    return url or config.get_main_option("sqlalchemy.url") or PipelineSettings().database_url


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite alters tables by copying them; batch mode makes later migrations portable.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Held until the transaction ends; the second replica then finds the schema at head.
            lock = text("SELECT pg_advisory_xact_lock(:key)")
            connection.execute(lock, {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def run_async_migrations(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        run_migrations(connection)
    else:
        asyncio.run(run_async_migrations(database_url()))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

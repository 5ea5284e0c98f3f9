"""Upgrading a service's schema to head with Alembic, from the service, a test or a command.

Each service with a database keeps its own migrations (its package's ``alembic.ini`` and
``migrations/``), its own version table and its own advisory-lock key, so several
schemas can share one PostgreSQL database; how they are run is the same for all, and
lives here. A service's ``migrate.py`` names its :class:`Schema` and its
``migrations/env.py`` calls :func:`run_environment`.

Three ways into env.py, one schema:

- :func:`upgrade` hands over an open connection in ``config.attributes["connection"]``;
  the caller's transaction commits it.
- the ``alembic`` CLI: an async engine on ``-x database_url=...``, else
  ``sqlalchemy.url``, else the service's own database setting.
- ``alembic upgrade head --sql``: the DDL as text, for a DBA to review.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from logging.config import fileConfig
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.database import create_engine

HEAD = "head"

_ALEMBIC = threading.Lock()
"""Alembic's ``context`` is one global per process: two upgrades at once in one process
(tests, two apps in one loop), of one schema or of two, would trample it, so they take
turns. Across processes, the advisory lock in :func:`run_environment` does the same on
PostgreSQL."""


@dataclass(frozen=True)
class Schema:
    """One service's migrations, and how its ``migrate`` command describes them."""

    package: str
    """The package whose ``alembic.ini`` (and ``migrations/``) this is."""
    title: str
    """Whose schema, for the command's description ("the pipeline's")."""
    version_table: str
    lock_key: int
    """PostgreSQL advisory lock id: replicas starting together upgrade one after another."""
    url_variable: str
    """The environment variable of :attr:`configured_url`, for the command's help."""
    configured_url: Callable[[], str]
    """The service's database URL from its settings, when none is given."""


def alembic_config(schema: Schema, database_url: str) -> Config:
    """The packaged ``alembic.ini``, wherever the package is installed."""
    ini = Path(str(resources.files(schema.package) / "alembic.ini"))
    config = Config(str(ini))
    # Kept for offline (--sql) use; online runs use the connection passed in attributes.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logging"] = False
    return config


def _upgrade(connection: Connection, config: Config, revision: str) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade(schema: Schema, database_url: str, revision: str = HEAD) -> None:
    """Upgrade the database at ``database_url`` to ``revision`` (head by default; upgrades only).

    Alembic is synchronous; running it through ``run_sync`` on our own async
    engine works inside a running event loop (the app lifespan, a test)
    without a nested ``asyncio.run``, and uses the same SQLite pragmas as the app.
    """
    while not _ALEMBIC.acquire(blocking=False):  # noqa: ASYNC110 (a thread lock, not an event)
        # Polling, not a blocking acquire in a thread: cancellation cannot strand the lock,
        # and it works whichever event loop calls.
        await asyncio.sleep(0.02)
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, alembic_config(schema, database_url), revision)
    finally:
        _ALEMBIC.release()
        await engine.dispose()


def command_line(schema: Schema, argv: list[str] | None = None) -> None:
    """``python -m <package>.migrate``: the deploy step when replicas should not each
    migrate at start."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {schema.package}.migrate",
        description=f"Upgrade {schema.title} database schema.",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"SQLAlchemy async URL (default: {schema.url_variable}, else the SQLite default)",
    )
    parser.add_argument("--revision", default=HEAD, help="target revision (default: head)")
    args = parser.parse_args(argv)
    url: str = args.database_url or schema.configured_url()
    asyncio.run(upgrade(schema, url, args.revision))


def run_environment(schema: Schema, metadata: MetaData) -> None:
    """The body of a service's ``migrations/env.py``: run its migrations of ``metadata``."""
    config = context.config
    if config.config_file_name is not None and config.attributes.get("configure_logging", True):
        # Only for the alembic CLI: inside the service, logging is already configured.
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    if context.is_offline_mode():
        context.configure(
            url=_database_url(schema, config),
            target_metadata=metadata,
            literal_binds=True,
            version_table=schema.version_table,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run_migrations(connection, schema, metadata)
    else:
        asyncio.run(_run_async_migrations(_database_url(schema, config), schema, metadata))


def _database_url(schema: Schema, config: Config) -> str:
    url = context.get_x_argument(as_dictionary=True).get("database_url")
    return url or config.get_main_option("sqlalchemy.url") or schema.configured_url()


def _run_migrations(connection: Connection, schema: Schema, metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite alters tables by copying them; batch mode makes later migrations portable.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        version_table=schema.version_table,
        # Another schema's tables in the same database are not this one's to drop.
        include_name=lambda name, kind, _: kind != "table" or name in metadata.tables,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Held until the transaction ends; the second replica then finds the schema at head.
            lock = text("SELECT pg_advisory_xact_lock(:key)")
            connection.execute(lock, {"key": schema.lock_key})
        context.run_migrations()


async def _run_async_migrations(url: str, schema: Schema, metadata: MetaData) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_migrations, schema, metadata)
            await connection.commit()
    finally:
        await engine.dispose()

"""Upgrading the webhooks schema to head, from the service, a test or the command line.

``python -m services.webhooks.migrate [--database-url URL]``. The same way as the
pipeline's (services/pipeline/migrate.py), with a version table of its own
(``webhooks_alembic_version``), so both schemas can share one PostgreSQL database.
"""

from __future__ import annotations

import argparse
import asyncio
import zlib
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from services.pipeline.db import create_engine

# One lock for both schemas: Alembic's context is one global per process.
from services.pipeline.migrate import _ALEMBIC as ALEMBIC_TURNS
from services.webhooks.settings import WebhooksSettings

HEAD = "head"
VERSION_TABLE = "webhooks_alembic_version"
MIGRATION_LOCK_KEY = zlib.crc32(b"leadflow.webhooks.migrations")


def alembic_config(database_url: str) -> Config:
    ini = Path(str(resources.files("services.webhooks") / "alembic.ini"))
    config = Config(str(ini))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logging"] = False
    return config


def _upgrade(connection: Connection, config: Config, revision: str) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def migrate(database_url: str, revision: str = HEAD) -> None:
    """Upgrade the database at ``database_url`` to ``revision`` (head by default)."""
    while not ALEMBIC_TURNS.acquire(blocking=False):  # noqa: ASYNC110 (a thread lock)
        await asyncio.sleep(0.02)
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, alembic_config(database_url), revision)
    finally:
        ALEMBIC_TURNS.release()
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.webhooks.migrate",
        description="Upgrade the webhooks service's database schema.",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy async URL (default: LEADFLOW_WEBHOOKS_DATABASE_URL, else SQLite)",
    )
    parser.add_argument("--revision", default=HEAD, help="target revision (default: head)")
    args = parser.parse_args(argv)
    url: str = args.database_url or WebhooksSettings().webhooks_database_url
    asyncio.run(migrate(url, args.revision))


if __name__ == "__main__":
    main()

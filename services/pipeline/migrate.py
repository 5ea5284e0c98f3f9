"""Upgrading the schema to head, from the service, a test or the command line.

``python -m services.pipeline.migrate [--database-url URL]`` is the deploy
step when several replicas should not each migrate at start.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import zlib
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from services.pipeline.settings import PipelineSettings
from shared.database import create_engine

HEAD = "head"

MIGRATION_LOCK_KEY = zlib.crc32(b"leadflow.pipeline.migrations")
"""PostgreSQL advisory lock id (env.py): replicas starting together upgrade one after another."""

_ALEMBIC = threading.Lock()
"""Alembic's ``context`` is one global per process: two upgrades at once in one process
(tests, two apps in one loop) would trample it, so they take turns. Across processes,
env.py's advisory lock does the same on PostgreSQL."""


def alembic_config(database_url: str) -> Config:
    """The packaged ``alembic.ini``, wherever the package is installed."""
    ini = Path(str(resources.files("services.pipeline") / "alembic.ini"))
    config = Config(str(ini))
    # Kept for offline (--sql) use; online runs use the connection passed in attributes.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logging"] = False
    return config


def _upgrade(connection: Connection, config: Config, revision: str) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def migrate(database_url: str, revision: str = HEAD) -> None:
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
            await connection.run_sync(_upgrade, alembic_config(database_url), revision)
    finally:
        _ALEMBIC.release()
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.pipeline.migrate",
        description="Upgrade the pipeline's database schema.",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy async URL (default: LEADFLOW_DATABASE_URL, else the SQLite default)",
    )
    parser.add_argument("--revision", default=HEAD, help="target revision (default: head)")
    args = parser.parse_args(argv)
    url: str = args.database_url or PipelineSettings().database_url
    asyncio.run(migrate(url, args.revision))


if __name__ == "__main__":
    main()

"""The pipeline's schema: upgrading it to head, from the service, a test or the command line.

``python -m services.pipeline.migrate [--database-url URL]`` is the deploy
step when several replicas should not each migrate at start.
"""

from __future__ import annotations

import zlib

from services.pipeline.settings import PipelineSettings
from shared.schema_migrations import HEAD, Schema, command_line, upgrade

SCHEMA = Schema(
    package="services.pipeline",
    title="the pipeline's",
    version_table="alembic_version",  # Alembic's default: the pipeline's schema came first
    lock_key=zlib.crc32(b"leadflow.pipeline.migrations"),
    url_variable="LEADFLOW_DATABASE_URL",
    configured_url=lambda: PipelineSettings().database_url,
)


async def migrate(database_url: str, revision: str = HEAD) -> None:
    """Upgrade the pipeline's database at ``database_url`` (to head by default)."""
    await upgrade(SCHEMA, database_url, revision)


if __name__ == "__main__":
    command_line(SCHEMA)

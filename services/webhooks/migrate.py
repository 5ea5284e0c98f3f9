"""The webhooks schema: upgrading it to head, from the service, a test or the command line.

``python -m services.webhooks.migrate [--database-url URL]``. Its version table is its
own (``webhooks_alembic_version``), so both schemas can share one PostgreSQL database.
"""

from __future__ import annotations

import zlib

from services.webhooks.settings import WebhooksSettings
from shared.schema_migrations import HEAD, Schema, command_line, upgrade

SCHEMA = Schema(
    package="services.webhooks",
    title="the webhooks service's",
    version_table="webhooks_alembic_version",
    lock_key=zlib.crc32(b"leadflow.webhooks.migrations"),
    url_variable="LEADFLOW_WEBHOOKS_DATABASE_URL",
    configured_url=lambda: WebhooksSettings().webhooks_database_url,
)


async def migrate(database_url: str, revision: str = HEAD) -> None:
    """Upgrade the webhooks database at ``database_url`` (to head by default)."""
    await upgrade(SCHEMA, database_url, revision)


if __name__ == "__main__":
    command_line(SCHEMA)

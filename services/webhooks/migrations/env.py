"""Alembic environment of the webhooks schema (how it runs: :mod:`shared.schema_migrations`)."""

from __future__ import annotations

from services.webhooks.migrate import SCHEMA
from services.webhooks.tables import Base
from shared.schema_migrations import run_environment

run_environment(SCHEMA, Base.metadata)

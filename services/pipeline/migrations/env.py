"""Alembic environment of the pipeline's schema (how it runs: :mod:`shared.schema_migrations`)."""

from __future__ import annotations

from services.pipeline.migrate import SCHEMA
from services.pipeline.tables import Base
from shared.schema_migrations import run_environment

run_environment(SCHEMA, Base.metadata)

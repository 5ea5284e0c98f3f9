"""Alembic migrations of the pipeline's schema (a package, so they ship with it)."""

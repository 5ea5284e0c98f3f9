"""The leadflow services: ingest, scoring and pipeline."""

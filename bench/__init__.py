"""Benchmarks: how fast each stage of leadflow is, measured beside its raw limit in the same run.

``make bench`` (or ``python -m bench --cases ingest_batch,scoring --quick``) starts what it
needs (a local Kafka broker, an embedded PostgreSQL, the services as real processes), runs
each case after a warm-up, repeats it, and prints one table plus a JSON file of results
under ``bench/results/``. See docs/benchmarks.md.
"""

"""What every leadflow service runs: event schemas, settings, the Kafka factory, probes.

Developer tools (the local broker, `make run`, the demo) live in :mod:`devtools`.
"""

"""Prometheus metrics of pipeline."""

from prometheus_client import Counter, Gauge, Histogram

PERSISTED = Counter(
    "leadflow_pipeline_records_persisted_total", "Records written to the database", ["kind"]
)
INVALID = Counter("leadflow_pipeline_invalid_records_total", "Records that did not decode")
BATCH_SECONDS = Histogram(
    "leadflow_pipeline_batch_seconds",
    "Time to write one batch in one database transaction",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "leadflow_pipeline_consumer_lag",
    "Committed records of the partition the pipeline has not read yet",
    ["topic", "partition"],
)


def consumer_lag(position: int, highwater: int | None, last_stable: int | None) -> int | None:
    """Records between the consumer's position and the end it may read, ``None`` if unknown.

    A read_committed consumer can read up to the last stable offset, not the highwater: an
    open transaction's records are not lag yet. Both ends count the transaction markers,
    and so does the position once a fetch has passed them, so at rest this is zero.
    """
    end = last_stable if last_stable is not None and last_stable >= 0 else highwater
    if end is None or end < 0:
        return None
    return max(0, end - position)

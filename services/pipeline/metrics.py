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
    "Committed records of the partition the pipeline has not read yet (0 at rest)",
    ["topic", "partition"],
)
STREAM_CLIENTS = Gauge(
    "leadflow_pipeline_stream_clients", "Open /v1/stream/stage-changes connections"
)
STREAM_REFUSED = Counter(
    "leadflow_pipeline_stream_refused_total",
    "Stream connections refused because every place was taken (LEADFLOW_STREAM_MAX_CLIENTS)",
)

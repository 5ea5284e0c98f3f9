"""Prometheus metrics of ingest."""

from prometheus_client import Counter, Histogram

EVENTS_ACCEPTED = Counter(
    "leadflow_ingest_events_accepted_total", "Events acknowledged by Kafka", ["endpoint"]
)
REJECTED = Counter("leadflow_ingest_requests_rejected_total", "Requests refused", ["reason"])
PUBLISH_SECONDS = Histogram(
    "leadflow_ingest_publish_seconds", "Time until Kafka acknowledged a request", ["endpoint"]
)

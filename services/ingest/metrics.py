"""Prometheus metrics of ingest."""

from functools import cache

from prometheus_client import Counter, Histogram

EVENTS_ACCEPTED = Counter(
    "leadflow_ingest_events_accepted_total", "Events acknowledged by Kafka", ["endpoint"]
)
REJECTED = Counter("leadflow_ingest_requests_rejected_total", "Requests refused", ["reason"])
PUBLISH_SECONDS = Histogram(
    "leadflow_ingest_publish_seconds", "Time until Kafka acknowledged a request", ["endpoint"]
)


# ``labels()`` takes a lock and builds a key on every call: the accepting path, run once per
# request, asks for its children once. Resolved on first use, not at import, so a series
# still appears only once something happened to it.


@cache
def events_accepted(endpoint: str) -> Counter:
    return EVENTS_ACCEPTED.labels(endpoint)


@cache
def publish_seconds(endpoint: str) -> Histogram:
    return PUBLISH_SECONDS.labels(endpoint)

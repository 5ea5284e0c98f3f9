"""Prometheus metrics of webhooks."""

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "leadflow_webhooks_deliveries_total",
    "Delivery attempts by endpoint and outcome (success, failure, timeout, refused)",
    ["endpoint", "outcome"],
)
LATENCY = Histogram(
    "leadflow_webhooks_delivery_seconds",
    "Time from sending a webhook to its response, by endpoint",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)
PENDING = Gauge(
    "leadflow_webhooks_pending_messages", "Messages not yet delivered, by endpoint", ["endpoint"]
)
OLDEST_PENDING = Gauge(
    "leadflow_webhooks_oldest_pending_seconds",
    "Age of the oldest message not yet delivered, by endpoint (0 when none)",
    ["endpoint"],
)
DISABLED = Gauge(
    "leadflow_webhooks_disabled_endpoints", "Endpoints disabled (by an admin or a 410)"
)
MESSAGES = Counter(
    "leadflow_webhooks_messages_total", "Messages stored for delivery, by event type", ["type"]
)
INVALID = Counter("leadflow_webhooks_invalid_records_total", "Records that did not decode")
FAILED = Counter(
    "leadflow_webhooks_failed_messages_total",
    "Messages given up on after the last attempt, by endpoint",
    ["endpoint"],
)
CONSUMER_LAG = Gauge(
    "leadflow_webhooks_consumer_lag",
    "Committed records of the partition the webhooks service has not read yet (0 at rest)",
    ["topic", "partition"],
)
CLAIM_SECONDS = Histogram(
    "leadflow_webhooks_claim_seconds",
    "One claim of due messages for the endpoints that want more: its database round trips",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RECORD_SECONDS = Histogram(
    "leadflow_webhooks_record_attempts_seconds",
    "One write of the attempts that ended together (their outcomes, in one transaction)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

"""Prometheus metrics of scoring."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "leadflow_scoring_events_total",
    "Input records by outcome: scored, duplicate, dead_letter, replayed, erased",
    ["outcome"],
)
STAGE_CHANGES = Counter("leadflow_scoring_stage_changes_total", "Stage changes", ["to_stage"])
DEAD_LETTERS = Counter("leadflow_scoring_dead_letters_total", "Records sent to dead letters")
TRANSACTION_SECONDS = Histogram(
    "leadflow_scoring_transaction_seconds",
    "Time of one Kafka transaction (a batch of one partition)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAG = Gauge(
    "leadflow_scoring_lag_records", "Records behind the end of the partition", ["partition"]
)
CONSUMER_LAG = Gauge(
    "leadflow_scoring_consumer_lag",
    "Input records of the partition scoring has not read yet, after each poll (0 at rest)",
    ["topic", "partition"],
)
RESTORE_SECONDS = Histogram(
    "leadflow_scoring_restore_seconds", "Time to restore a partition's state from its changelog"
)
ACCOUNT_CONTRIBUTIONS = Counter(
    "leadflow_scoring_account_contributions_total",
    "Contribution records the account stage read, by outcome: folded, dead_letter, replayed",
    ["outcome"],
)
ACCOUNT_UPDATES = Counter(
    "leadflow_scoring_account_updates_total", "Account score updates published"
)

"""Prometheus metrics of the alerter, created once per registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class AlerterMetrics:
    """Alert states, evaluation cost, deliveries and the outbox; labels come from config."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # process_cpu_seconds_total, process_resident_memory_bytes, open fds: CPU and memory
        # per worker, beside the pipeline's own figures.
        ProcessCollector(registry=registry)
        self.alerts = Gauge(
            "gapwatch_alerter_alerts",
            "Alerts by state, rule and severity.",
            ["state", "rule", "severity"],
            registry=registry,
        )
        self.transitions = Counter(
            "gapwatch_alerter_transitions_total",
            "Alert transitions by rule and the state entered.",
            ["rule", "to_state"],
            registry=registry,
        )
        self.evaluations = Counter(
            "gapwatch_alerter_evaluations_total", "Evaluations of all rules.", registry=registry
        )
        self.evaluation_seconds = Histogram(
            "gapwatch_alerter_evaluation_seconds",
            "Time to evaluate every rule over every segment once.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.snapshot_to_commit_seconds = Histogram(
            "gapwatch_alerter_snapshot_to_commit_seconds",
            "From reading a snapshot record to its evaluation's commit in PostgreSQL.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.records = Counter(
            "gapwatch_alerter_score_records_total",
            "Snapshot records read from the scores topic, by result (ok, dead_letter).",
            ["result"],
            registry=registry,
        )
        self.leader = Gauge(
            "gapwatch_alerter_leader",
            "1 while this process evaluates the rules.",
            registry=registry,
        )
        self.store_errors = Counter(
            "gapwatch_alerter_store_errors_total",
            "Times PostgreSQL was unreachable.",
            registry=registry,
        )
        self.deliveries = Counter(
            "gapwatch_alerter_deliveries_total",
            "Notification delivery attempts by receiver and result (ok, failed).",
            ["receiver", "result"],
            registry=registry,
        )
        self.delivery_latency_seconds = Histogram(
            "gapwatch_alerter_delivery_latency_seconds",
            "From a transition to its receiver accepting the notification.",
            ["receiver"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.outbox_depth = Gauge(
            "gapwatch_alerter_outbox_depth",
            "Notifications not yet accepted by their receiver.",
            ["receiver"],
            registry=registry,
        )
        self.outbox_oldest_seconds = Gauge(
            "gapwatch_alerter_outbox_oldest_seconds",
            "Age of the oldest undelivered notification (0 when none).",
            registry=registry,
        )
        self.promise_records = Counter(
            "gapwatch_alerter_promise_records_total",
            "Promise-state records applied to the promises view (tombstones included).",
            registry=registry,
        )
        self.promise_view_lag = Histogram(
            "gapwatch_alerter_promise_view_lag_seconds",
            "From a promise-state record's append to Kafka (by the scorer) until the promises "
            "view committed it: how far GET /v1/promises trails the scorer.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )

"""Prometheus metrics of the ingest service, created once per registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gapwatch.core.topics import INPUT_STREAMS
from gapwatch_ingest.protocol import CLOSE_REASONS


class IngestMetrics:
    """Request outcomes, accepted and rejected events by reason, Kafka produce latency, and
    connections cut off for sending too slowly or too much."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "gapwatch_ingest_requests_total",
            "Requests to POST /v1/events by HTTP status code.",
            ["code"],
            registry=registry,
        )
        self.events_accepted = Counter(
            "gapwatch_ingest_events_accepted_total",
            "Events acknowledged by Kafka and answered 202, by stream.",
            ["stream"],
            registry=registry,
        )
        self.events_rejected = Counter(
            "gapwatch_ingest_events_rejected_total",
            "Events not accepted, by reason.",
            ["reason"],
            registry=registry,
        )
        self.produce_seconds = Histogram(
            "gapwatch_ingest_produce_duration_seconds",
            "Time from the first produce of a request until Kafka acknowledged all its events.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.batch_events = Histogram(
            "gapwatch_ingest_batch_events",
            "Events per accepted request.",
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 5000),
            registry=registry,
        )
        self.kafka_up = Gauge(
            "gapwatch_ingest_kafka_up",
            "1 while the producer is connected to the Kafka cluster (with several workers: all "
            "of them).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.connections_closed = Counter(
            "gapwatch_ingest_connections_closed_total",
            "Connections the server cut off, by reason: headers too slow or too large, an "
            "unread body too slow, or one connection over the open-connection limit.",
            ["reason"],
            registry=registry,
        )
        for stream in INPUT_STREAMS:
            self.events_accepted.labels(stream.value)
        for reason in CLOSE_REASONS:
            self.connections_closed.labels(reason)

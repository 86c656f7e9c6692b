"""Kafka topic names: the versioned streams gapwatch reads and writes."""

from __future__ import annotations

from enum import StrEnum


class Stream(StrEnum):
    """A logical stream; its topic name is `gapwatch.<stream>.v1` (plus an optional prefix)."""

    TICKETS = "tickets"
    JOBS = "jobs"
    FEEDBACK = "feedback"
    GAPS = "gaps"
    SCORES = "scores"
    PROMISES = "promises"
    ALERTS = "alerts"
    DEADLETTER = "deadletter"


INPUT_STREAMS: tuple[Stream, ...] = (Stream.TICKETS, Stream.JOBS, Stream.FEEDBACK)


def topic_name(stream: Stream, prefix: str = "") -> str:
    """The topic of `stream`; `prefix` lets tests and tenants run isolated copies side by side."""
    return f"{prefix}gapwatch.{stream.value}.v1"


_DAY_MS = 24 * 3600 * 1000

TOPIC_CONFIGS: dict[Stream, dict[str, str]] = {
    # Inputs are the history a replay re-scores, and what a restored worker re-reads.
    Stream.TICKETS: {"cleanup.policy": "delete", "retention.ms": str(30 * _DAY_MS)},
    Stream.JOBS: {"cleanup.policy": "delete", "retention.ms": str(30 * _DAY_MS)},
    Stream.FEEDBACK: {"cleanup.policy": "delete", "retention.ms": str(30 * _DAY_MS)},
    # Gap events and alert transitions: facts for other services, kept as long as the inputs.
    Stream.GAPS: {"cleanup.policy": "delete", "retention.ms": str(30 * _DAY_MS)},
    Stream.ALERTS: {"cleanup.policy": "delete", "retention.ms": str(30 * _DAY_MS)},
    # Window snapshots are republished every few seconds and read fresh (60 s staleness).
    Stream.SCORES: {"cleanup.policy": "delete", "retention.ms": str(1 * _DAY_MS)},
    # Keyed by promise (an identity): compacted, the topic is every promise's current state;
    # a tombstone (a closed promise's end) stays a day, so a consumer that was down sees it.
    Stream.PROMISES: {"cleanup.policy": "compact", "delete.retention.ms": str(1 * _DAY_MS)},
    # Rare, and kept for a person to look at and replay.
    Stream.DEADLETTER: {"cleanup.policy": "delete", "retention.ms": str(30 * _DAY_MS)},
}
"""Configs of each topic `gapwatch topics` creates; `GAPWATCH_KAFKA_TOPIC_CONFIGS` overrides
them (`gapwatch.kafka.topics.topic_configs`). Output topics share the inputs' partition count,
so consumers can co-partition them."""

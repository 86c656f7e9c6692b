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

"""faust-streaming's own floor: a faust agent that does nothing with the events it takes.

Run by `bench/scorer.py` over the same input topics as the scorer, so the scorer's rate can be
read against what faust alone delivers on this machine (same consumer settings, the same
`take_events` batching, raw bytes, no table, no producer):

    .venv/bin/python -m bench.faust_floor EXPECTED [--per-event]   (GAPWATCH_KAFKA_*, _TOPIC_PREFIX)

`--per-event` iterates `stream.events()` instead of `take_events`.

Prints `faust-floor <events> <seconds>` once EXPECTED events have been taken.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid

import faust

from gapwatch.core.topics import INPUT_STREAMS, topic_name
from gapwatch.kafka.settings import KafkaSettings


def main() -> None:
    expected = int(sys.argv[1])
    per_event = sys.argv[2:] == ["--per-event"]
    settings = KafkaSettings()
    app = faust.App(
        f"{settings.topic_prefix}faust-floor-{uuid.uuid4().hex[:6]}",
        broker=f"kafka://{settings.kafka_bootstrap.split(',')[0]}",
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="gapwatch-faust-floor-"),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.kafka_partitions,
        topic_disable_leader=True,
        stream_wait_empty=False,
    )
    topics = app.topic(
        *(topic_name(s, settings.topic_prefix) for s in INPUT_STREAMS),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    seen = 0
    started = 0.0

    @app.agent(topics)
    async def floor(stream: faust.StreamT[bytes]) -> None:
        nonlocal seen, started
        if per_event:
            batches = (  # one event at a time, no take_events buffer
                [event] async for event in stream.events()
            )
        else:
            batches = stream.take_events(500, within=0.05)  # type: ignore[attr-defined]
        async for events in batches:
            if not started:
                started = time.perf_counter()
            seen += len(events)
            if seen >= expected:
                print(f"faust-floor {seen} {time.perf_counter() - started:.3f}", flush=True)
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()

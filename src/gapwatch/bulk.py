"""Bulk-loads a JSON Lines file of events into Kafka, validating every line like the ingest API."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from gapwatch.core.timebound import DEFAULT_MAX_FUTURE_SKEW_SECONDS, not_after
from gapwatch.core.topics import INPUT_STREAMS, topic_name
from gapwatch.core.validation import EventRejected, decode_event, encode_event
from gapwatch.kafka.batches import CLOUDEVENTS_HEADERS
from gapwatch.kafka.clients import reliable_producer
from gapwatch.kafka.settings import KafkaSettings

# Acks are awaited per chunk so memory stays bounded on files of any size.
CHUNK_EVENTS = 5000


@dataclass
class BulkReport:
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


async def bulk_ingest(
    settings: KafkaSettings,
    path: Path,
    rejects_path: Path | None = None,
    *,
    progress: bool = True,
    max_future_skew_seconds: float = DEFAULT_MAX_FUTURE_SKEW_SECONDS,
) -> BulkReport:
    """Produce every valid line of `path`; write each rejected line with its errors to rejects.

    As the ingest API does, a line whose event time lies more than `max_future_skew_seconds`
    ahead of this machine's clock is rejected (`from_the_future`); history of any age is not.
    """
    topics = {s: topic_name(s, settings.topic_prefix) for s in INPUT_STREAMS}
    report = BulkReport()
    total_bytes = path.stat().st_size  # noqa: ASYNC240 - one stat before the loop
    producer = reliable_producer(settings)
    await producer.start()
    rejects: IO[bytes] | None = rejects_path.open("wb") if rejects_path else None
    bar = Progress(
        TextColumn("[bold]ingest[/]"),
        BarColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        disable=not progress,
        console=Console(stderr=True),  # stdout is for the report
    )
    try:
        with bar, path.open("rb") as source:
            task = bar.add_task("ingest", total=total_bytes)
            pending: list[asyncio.Future[object]] = []
            limit = not_after(datetime.now(UTC), max_future_skew_seconds)
            for line_no, line in enumerate(source, start=1):
                bar.advance(task, len(line))
                if not line.strip():
                    continue
                try:
                    event = decode_event(line, limit)
                except EventRejected as exc:
                    report.rejected[exc.rejection.value] += 1
                    if rejects is not None:
                        rejects.write(
                            orjson.dumps(
                                {
                                    "line": line_no,
                                    "reason": exc.rejection.value,
                                    "errors": [
                                        {k: v for k, v in e.as_dict().items() if k != "index"}
                                        for e in exc.errors
                                    ],
                                    "raw": line.decode("utf-8", "replace").rstrip("\n"),
                                }
                            )
                            + b"\n"
                        )
                    continue
                pending.append(
                    await producer.send(
                        topics[event.stream],
                        encode_event(event),
                        key=event.key,
                        headers=list(CLOUDEVENTS_HEADERS),
                    )
                )
                if len(pending) >= CHUNK_EVENTS:
                    await asyncio.gather(*pending)
                    report.accepted += len(pending)
                    pending.clear()
                    limit = not_after(datetime.now(UTC), max_future_skew_seconds)
            await asyncio.gather(*pending)
            report.accepted += len(pending)
    finally:
        await producer.stop()
        if rejects is not None:
            rejects.close()
    return report

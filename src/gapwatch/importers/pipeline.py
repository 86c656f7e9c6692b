"""The import pipeline: a source's event documents, validated like the ingest API, in time order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gapwatch.core.validation import EventRejected, encode_event, validate_event
from gapwatch.importers import ImportOptions, ImportSource, ImportStats
from gapwatch.importers.files import csv_rows

INVALID_EXAMPLES = 5


@dataclass
class ImportResult:
    """Every valid event as canonical JSON bytes (times in UTC), ordered by event time."""

    events: list[bytes]
    stats: ImportStats


def collect(documents: Iterable[dict[str, Any]], stats: ImportStats) -> list[bytes]:
    """Validate each document with `validate_event`, encode it, and order all by event time.

    The scorer (and `gapwatch replay`) refuses an event more than its grace period behind the
    latest one, so an export grouped by item must be interleaved by time before it is loaded.
    Ties keep the source's order, so the output is the same bytes for the same input.
    """
    keyed: list[tuple[datetime, int, bytes]] = []
    for seq, document in enumerate(documents):
        try:
            event = validate_event(document)
        except EventRejected as exc:
            stats.invalid[exc.rejection.value] += 1
            if len(stats.invalid_examples) < INVALID_EXAMPLES:
                stats.invalid_examples.append(f"{document.get('id')}: {exc}")
            continue
        keyed.append((event.data.occurred_at, seq, encode_event(event)))
    keyed.sort(key=lambda k: (k[0], k[1]))
    stats.events = len(keyed)
    return [raw for _, _, raw in keyed]


def run_import(
    source: ImportSource, path: Path, options: ImportOptions, *, progress: bool = True
) -> ImportResult:
    """Read `path`, map its rows with `source`, and return the valid events in time order."""
    stats = ImportStats()
    with csv_rows(path, progress=progress, label=f"import {source.NAME}") as rows:
        events = collect(source.map_rows(rows, options, stats), stats)
    return ImportResult(events, stats)

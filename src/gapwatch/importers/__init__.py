"""Importers: turn another system's export into valid gapwatch input events (the contracts).

A *source* is one module in this package: it declares a `NAME`, a one-line `SUMMARY`, the SLA
policies file that fits its data (`DEFAULT_POLICIES`), and `map_rows`, a function from the rows of
its export (CSV, read by `gapwatch.importers.files`) to event documents. The pipeline
(`gapwatch.importers.pipeline`) validates every document with the same code as the ingest API and
orders them by event time; `gapwatch.importers.sinks` writes them to a file, the ingest API or
Kafka. To add a source, write `gapwatch/importers/<name>.py` and add one line to `SOURCES`.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any, Protocol, cast

from gapwatch.core.policies import PolicySet

Row = Mapping[str, str]
"""One row of an export: column name -> text, as `csv.DictReader` gives it."""

SOURCES: dict[str, tuple[str, str]] = {
    # name: (module, summary); the summary is here so building the CLI imports no source module.
    "servicenow": (
        "gapwatch.importers.servicenow",
        "ServiceNow incident event log (UCI 'incident management process enriched event log')",
    ),
}


class UnknownSource(LookupError):
    """No importer is registered under that name."""

    retriable = False


class SourceFormatError(ValueError):
    """The input is not what the source expects (a missing column, no CSV in the zip, ...)."""

    retriable = False


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """What every source understands.

    `timezone` is the zone of the export's naive timestamps; `policies`, if given, lets the source
    name each ticket's SLA policy (`sla_policy`), so it holds even next to other policies that
    would match first; `limit` stops after that many items; `source` is the CloudEvents `source`.
    """

    timezone: tzinfo = UTC
    policies: PolicySet | None = None
    limit: int | None = None
    source: str | None = None


@dataclass
class ImportStats:
    """Counts an import reports: rows read and skipped, corrections made, events produced."""

    rows: int = 0
    items: int = 0
    events: int = 0
    # Rows that produced nothing because they could not be used, by reason.
    skipped: Counter[str] = field(default_factory=Counter)
    # Rows used after a documented correction (a clamped time, a reordered row), by reason.
    adjusted: Counter[str] = field(default_factory=Counter)
    # Facts about the input worth knowing that change nothing (a priority that changed, ...).
    notes: Counter[str] = field(default_factory=Counter)
    # Produced events the contracts refused: a bug in the source module, never expected.
    invalid: Counter[str] = field(default_factory=Counter)
    invalid_examples: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        """Human-readable lines: totals, then each counter by reason (most frequent first)."""
        lines = [
            f"read {self.rows} rows, {self.items} items; produced {self.events} valid events",
            "skipped rows: " + _counts(self.skipped),
            "adjusted rows: " + _counts(self.adjusted),
            "notes: " + _counts(self.notes),
        ]
        if self.invalid:
            lines.append("INVALID events (a bug, not loaded): " + _counts(self.invalid))
            lines.extend(f"  {example}" for example in self.invalid_examples)
        return lines


def _counts(counter: Counter[str]) -> str:
    if not counter:
        return "none"
    total = sum(counter.values())
    return f"{total} (" + ", ".join(f"{k}: {n}" for k, n in counter.most_common()) + ")"


class ImportSource(Protocol):
    """What a source module provides (modules satisfy this protocol structurally)."""

    NAME: str
    SUMMARY: str
    DEFAULT_POLICIES: Path

    def map_rows(
        self, rows: Iterable[Row], options: ImportOptions, stats: ImportStats
    ) -> Iterator[dict[str, Any]]:
        """Yield gapwatch event documents (JSON values) for the rows; count what it skips."""
        ...


def source_names() -> list[str]:
    return sorted(SOURCES)


def source_summary(name: str) -> str:
    return _entry(name)[1]


def get_source(name: str) -> ImportSource:
    """The source module registered under `name`."""
    module = importlib.import_module(_entry(name)[0])
    return cast(ImportSource, module)


def _entry(name: str) -> tuple[str, str]:
    try:
        return SOURCES[name]
    except KeyError:
        known = ", ".join(source_names())
        raise UnknownSource(f"unknown import source {name!r}; known: {known}") from None


__all__ = [
    "SOURCES",
    "ImportOptions",
    "ImportSource",
    "ImportStats",
    "Row",
    "SourceFormatError",
    "UnknownSource",
    "get_source",
    "source_names",
    "source_summary",
]

"""Orders a JSON Lines file of events by event time, on disk when it does not fit in memory.

`gapwatch replay --sort` reads exports grouped by item (every event of a ticket, then the next
ticket) in the order the scorer would have seen them. The key is the time the scoring core keys
its watermarks on (`data.occurred_at`: `opened_at`, `replied_at`, ...), then the line number,
so the order is total and stable. Lines are read in runs of at most `memory_bytes`; each run is
sorted and, unless the whole file fits in one, written to a temporary file; the runs are then
merged k ways (`heapq.merge`). Lines whose time cannot be read (not JSON, an unknown type, no
valid time) come first: replay refuses them with their own line numbers and reasons.
"""

from __future__ import annotations

import heapq
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from gapwatch.core.catalog import MODEL_BY_TYPE
from gapwatch.core.envelope import EventData
from gapwatch.core.timebound import occurrence_field
from gapwatch.core.validation import EventRejected, decode_event

DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024
UNSORTABLE = -(1 << 62)
"""The key of a line with no readable event time: before every real time."""

# Per line held in a run, beyond its bytes: the tuple, the bytes object and two ints.
_OVERHEAD = 150
_HEADER = struct.Struct("<qqI")  # key (µs since the epoch), line number, length
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIELDS: dict[str, str | None] = {}


def event_time_key(line: bytes) -> int:
    """Microseconds since the epoch of the line's event time, or `UNSORTABLE`."""
    try:
        value: Any = orjson.loads(line)
        field = _field(value["type"])
        if field is not None:
            at = datetime.fromisoformat(value["data"][field])
            if at.tzinfo is not None:
                return _micros(at)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        pass
    # Slow path, rare: a time the contracts accept in a form `fromisoformat` does not read.
    try:
        return _micros(decode_event(line).data.occurred_at)
    except (EventRejected, OverflowError):
        return UNSORTABLE


def _micros(at: datetime) -> int:
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _field(event_type: Any) -> str | None:
    if not isinstance(event_type, str):
        return None
    if event_type not in _FIELDS:
        model = MODEL_BY_TYPE.get(event_type)
        data: Any = None if model is None else model.model_fields["data"].annotation
        known = isinstance(data, type) and issubclass(data, EventData)
        _FIELDS[event_type] = occurrence_field(data) if known else None
    return _FIELDS[event_type]


class SortedLines:
    """Iterates (line number, line) of `lines` in event-time order; see the module docstring.

    Use as a context manager (or call `close`) so the run files go even if iteration stops early.
    `on_read(bytes)` is called as input is consumed; `runs` says how many runs there were.
    """

    def __init__(
        self,
        lines: Iterable[bytes],
        *,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
        temp_dir: Path | None = None,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        if memory_bytes < 1:
            raise ValueError(f"memory_bytes must be positive, got {memory_bytes}")
        self._lines = lines
        self._memory = memory_bytes
        self._temp_dir = temp_dir
        self._on_read = on_read
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._files: list[IO[bytes]] = []
        self.runs = 0

    def __enter__(self) -> SortedLines:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for file in self._files:
            file.close()
        self._files.clear()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        run: list[tuple[int, int, bytes]] = []
        held = 0
        read = 0
        on_read = self._on_read
        for line_no, line in enumerate(self._lines, start=1):
            read += len(line)
            if on_read is not None and read >= 1 << 20:
                on_read(read)
                read = 0
            if not line.strip():
                continue
            run.append((event_time_key(line), line_no, line))
            held += len(line) + _OVERHEAD
            if held >= self._memory:
                self._spill(run)
                run, held = [], 0
        if on_read is not None and read:
            on_read(read)
        run.sort()
        if not self._files:
            self.runs = 1 if run else 0
            for _, line_no, line in run:
                yield line_no, line
            return
        self._spill(run)
        for _, line_no, line in heapq.merge(*(_read_run(f) for f in self._files)):
            yield line_no, line

    def _spill(self, run: list[tuple[int, int, bytes]]) -> None:
        if not run:
            return
        run.sort()
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="gapwatch-sort-", dir=self._temp_dir)
        path = Path(self._dir.name) / f"run-{len(self._files):05d}"
        with path.open("wb", buffering=1 << 20) as out:
            for key, line_no, line in run:
                out.write(_HEADER.pack(key, line_no, len(line)))
                out.write(line)
        self._files.append(path.open("rb", buffering=1 << 16))
        self.runs = len(self._files)


def _read_run(file: IO[bytes]) -> Iterator[tuple[int, int, bytes]]:
    size = _HEADER.size
    while header := file.read(size):
        key, line_no, length = _HEADER.unpack(header)
        yield key, line_no, file.read(length)

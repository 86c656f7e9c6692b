"""Reading an export: the rows of a CSV file, or of the CSV in a .zip, streamed with progress."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from gapwatch.importers import SourceFormatError

# The bar is redrawn every this many rows; per row would cost more than parsing the row.
PROGRESS_EVERY_ROWS = 2000


class _CountingReader(io.RawIOBase):
    """Counts the (uncompressed) bytes read through it, for the progress bar."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n


def _open_binary(path: Path, stack: ExitStack) -> tuple[IO[bytes], int]:
    """The CSV's bytes and their size; a .zip is read in place, decompressed while streaming."""
    if not path.is_file():
        raise SourceFormatError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        archive = stack.enter_context(zipfile.ZipFile(path))
        members = [m for m in archive.infolist() if m.filename.lower().endswith(".csv")]
        if len(members) != 1:
            found = ", ".join(m.filename for m in archive.infolist()) or "nothing"
            raise SourceFormatError(f"{path}: expected exactly one .csv in the zip, found {found}")
        return stack.enter_context(archive.open(members[0])), members[0].file_size
    return stack.enter_context(path.open("rb")), path.stat().st_size


@contextmanager
def csv_rows(
    path: Path, *, progress: bool = True, label: str = "import"
) -> Iterator[Iterator[dict[str, str]]]:
    """The rows of `path` (.csv, or a .zip holding one .csv) as dicts, header row as keys.

    Text is UTF-8 (a byte-order mark is ignored; undecodable bytes become U+FFFD rather than
    stopping the import). With `progress`, a bar on stderr follows the bytes read.
    """
    with ExitStack() as stack:
        raw, total = _open_binary(path, stack)
        counter = _CountingReader(raw)
        text = io.TextIOWrapper(
            io.BufferedReader(counter), encoding="utf-8-sig", errors="replace", newline=""
        )
        # Closing the wrapper leaves `raw` alone: the file or zip member closes in its own context.
        stack.callback(text.close)
        bar = Progress(
            TextColumn(f"[bold]{label}[/]"),
            BarColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not progress,
            transient=False,
        )
        stack.enter_context(bar)
        task = bar.add_task(label, total=total)

        def rows() -> Iterator[dict[str, str]]:
            for n, row in enumerate(csv.DictReader(text), start=1):
                if n % PROGRESS_EVERY_ROWS == 0:
                    bar.update(task, completed=counter.count)
                yield row
            bar.update(task, completed=total)

        yield rows()

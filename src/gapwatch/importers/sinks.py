"""Where imported events go: a JSON Lines file, the ingest API in batches, or Kafka (bulk load)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

DEFAULT_BATCH_EVENTS = 500


def write_jsonl(events: list[bytes], path: Path) -> None:
    """One event per line, as `gapwatch ingest` and `gapwatch replay` read them."""
    with path.open("wb") as out:
        for raw in events:
            out.write(raw)
            out.write(b"\n")


def send_http(
    events: list[bytes], target: str, *, batch: int = DEFAULT_BATCH_EVENTS, progress: bool = True
) -> int:
    """POST the events to the ingest API in batches (bearer token from GAPWATCH_INGEST_TOKEN).

    The simulator's sink does the HTTP part: it retries a 503 or 429 after what `Retry-After`
    asks (at least its own backoff, at most a minute) and raises
    RuntimeError on any other refusal; an unreachable API is a RuntimeError too, saying how many
    events went before. Batches go in event-time order, so the scorer's time rule sees the
    import as one forward-moving stream. A resend after a failure is safe: ids are stable.
    """
    return asyncio.run(_send_http(events, target, batch, progress))


async def _send_http(events: list[bytes], target: str, batch: int, progress: bool) -> int:
    import httpx

    from gapwatch.simulate import _open_sink

    sink, close = await _open_sink(target)
    bar = Progress(
        TextColumn("[bold]send[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        disable=not progress,
    )
    sent = 0
    try:
        with bar:
            task = bar.add_task("send", total=len(events))
            for offset in range(0, len(events), batch):
                chunk = [orjson.loads(raw) for raw in events[offset : offset + batch]]
                try:
                    await sink(chunk)
                except httpx.TransportError as exc:
                    raise RuntimeError(f"cannot reach {target} after {sent} events: {exc}") from exc
                sent += len(chunk)
                bar.update(task, completed=sent)
    finally:
        await close()
    return sent


def send_kafka(events: list[bytes], *, progress: bool = True) -> tuple[int, dict[str, int]]:
    """Produce the events to their topics with `gapwatch ingest`'s bulk loader (Kafka settings
    from the environment); returns (accepted, rejected by reason)."""
    from gapwatch.bulk import bulk_ingest
    from gapwatch.kafka.settings import KafkaSettings
    from gapwatch.settings import load_settings

    settings = load_settings(KafkaSettings)
    with tempfile.TemporaryDirectory(prefix="gapwatch-import-") as tmp:
        path = Path(tmp) / "events.jsonl"
        write_jsonl(events, path)
        report = asyncio.run(bulk_ingest(settings, path, None, progress=progress))
    return report.accepted, dict(report.rejected)

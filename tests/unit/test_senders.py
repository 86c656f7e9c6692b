"""Senders are polite: the simulator and the importers wait as long as ingest's `Retry-After`
asks, and progress bars go to stderr so stdout stays the command's output (issue 24)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gapwatch.simulate import MAX_RETRY_DELAY_SECONDS, _open_sink, retry_delay

SRC = Path(__file__).resolve().parents[2] / "src" / "gapwatch"
NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "attempt", "expected"),
    [
        (None, 0, 0.5),  # no header: the client's own backoff
        (None, 3, 4.0),
        (None, 9, 5.0),
        ("2", 0, 2.0),  # seconds
        ("0", 2, 2.0),  # never less than the backoff
        ("3600", 0, MAX_RETRY_DELAY_SECONDS),  # capped
        ("Sat, 05 Dec 2026 12:00:07 GMT", 0, 7.0),  # an HTTP date
        ("Sat, 05 Dec 2026 11:00:00 GMT", 1, 1.0),  # a date in the past: the backoff
        ("soon", 0, 0.5),  # unreadable: the backoff
        ("-5", 0, 0.5),
    ],
)
def test_retry_delay_honours_retry_after(header: str | None, attempt: int, expected: float):
    assert retry_delay(header, attempt, NOW) == expected


async def test_the_http_sink_waits_as_long_as_retry_after_asks():
    arrivals: list[float] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
        await reader.readexactly(length)
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            status, extra = b"503 Service Unavailable", b"Retry-After: 2\r\n"
        else:
            status, extra = b"202 Accepted", b""
        body = b'{"accepted":1}'
        writer.write(
            b"HTTP/1.1 "
            + status
            + b"\r\n"
            + extra
            + b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        sink, close = await _open_sink(f"http://127.0.0.1:{port}")
        try:
            await sink([{"id": "e-1"}])
        finally:
            await close()
    assert len(arrivals) == 2
    # The backoff alone would have sent again after 0.5 s; Retry-After asked for 2.
    assert arrivals[1] - arrivals[0] >= 2.0


def test_every_progress_bar_writes_to_stderr():
    calls = 0
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"\bProgress\(", text):
            calls += 1
            call = text[match.end() : text.find("\n    )", match.end())]
            assert "Console(stderr=True)" in call, f"{path.name}: a progress bar on stdout"
    assert calls >= 3

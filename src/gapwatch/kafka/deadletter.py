"""The dead-letter record every service writes for input it cannot use: reason plus the bytes.

A dead letter always fits on its topic, whatever it keeps: the original key and value are copied
whole only while together they are at most `COPY_LIMIT` bytes (base64 makes a third more), and
its own Kafka key (`dead_letter_key`) is at most `KEY_LIMIT` bytes. A bigger original is named by
topic/partition/offset, sizes and SHA-256 digests, with its first `HEAD_BYTES` bytes, and
`copied: false` says so: the record itself stays on its topic until retention removes it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

COPY_LIMIT = 512 * 1024
"""Key plus value bytes copied whole; base64 and the envelope keep the record under Kafka's
default 1 MiB limit (`message.max.bytes`), so no original can make its dead letter unsendable."""
HEAD_BYTES = 1024
"""How much of an original too big to copy is kept, for a first look."""
KEY_LIMIT = 256
"""A longer original key is replaced by its digest as the dead letter's own key."""
DETAIL_LIMIT = 2000
"""Characters of the human detail kept."""
HEADERS_LIMIT = 64 * 1024
"""Bytes of the original's headers carried over; the rest are counted, not copied."""


def dead_letter_headers(
    reason: str,
    detail: str,
    *,
    topic: str,
    partition: int,
    offset: int,
    original: Sequence[tuple[str, bytes | None]] | None = None,
) -> list[tuple[str, bytes]]:
    """The dead letter's Kafka headers: the original record's own (up to `HEADERS_LIMIT` bytes),
    then where it came from and why, under the names Kafka Connect gives its dead-letter
    context (`__connect.errors.topic`, `.partition`, `.offset`, `.exception.class.name` = the
    reason, `.exception.message`), so tools that read those read these."""
    out: list[tuple[str, bytes]] = []
    size = dropped = 0
    for name, value in original or ():
        size += len(name) + len(value or b"")
        if size > HEADERS_LIMIT:
            dropped += 1
            continue
        out.append((name, value or b""))
    out += [
        ("__connect.errors.topic", topic.encode()),
        ("__connect.errors.partition", str(partition).encode()),
        ("__connect.errors.offset", str(offset).encode()),
        ("__connect.errors.exception.class.name", reason.encode()),
        ("__connect.errors.exception.message", detail[:DETAIL_LIMIT].encode()),
    ]
    if dropped:
        out.append(("gapwatch.dlq.headers.dropped", str(dropped).encode()))
    return out


def dead_letter_record(
    reason: str,
    detail: str,
    *,
    service: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
) -> bytes:
    """JSON with a machine-readable `reason`, a human `detail` and the original record: intact
    (`key_b64`, `value_b64`) when it fits, else its sizes, digests and first bytes."""
    key, value = key or b"", value or b""
    record: dict[str, Any] = {
        "reason": reason,
        "detail": detail[:DETAIL_LIMIT],
        "service": service,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key_size": len(key),
        "value_size": len(value),
    }
    if len(key) + len(value) <= COPY_LIMIT:
        record["copied"] = True
        record["key_b64"] = _b64(key)
        record["value_b64"] = _b64(value)
    else:
        record["copied"] = False
        record["key_sha256"] = hashlib.sha256(key).hexdigest()
        record["value_sha256"] = hashlib.sha256(value).hexdigest()
        record["key_head_b64"] = _b64(key[:HEAD_BYTES])
        record["value_head_b64"] = _b64(value[:HEAD_BYTES])
    record["at"] = datetime.now(UTC).isoformat()
    return orjson.dumps(record)


def dead_letter_key(key: bytes | None) -> bytes:
    """The dead letter's own Kafka key: the original's, or `sha256:<hex>` of a long one."""
    key = key or b""
    if len(key) <= KEY_LIMIT:
        return key
    return b"sha256:" + hashlib.sha256(key).hexdigest().encode()


def excerpt(data: bytes | str | None, limit: int = 64) -> str:
    """A bounded, printable rendering of user data for logs and details: never the whole of a
    key or value that may be a megabyte long."""
    if data is None:
        return "None"
    shown = repr(data[:limit])
    return shown if len(data) <= limit else f"{shown}... ({len(data)} long)"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead letter ready to send: its own key, its JSON value and its headers."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def dead_letter(
    reason: str,
    detail: str,
    *,
    service: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None = None,
) -> DeadLetter:
    """The dead letter of one record (`dead_letter_key`, `dead_letter_record`,
    `dead_letter_headers`), as every service writes it."""
    return DeadLetter(
        dead_letter_key(key),
        dead_letter_record(
            reason,
            detail,
            service=service,
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
        ),
        dead_letter_headers(
            reason, detail, topic=topic, partition=partition, offset=offset, original=headers
        ),
    )

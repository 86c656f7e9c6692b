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

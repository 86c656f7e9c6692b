"""The dead-letter record every service writes for input it cannot use: reason plus the bytes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson


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
    """JSON with a machine-readable `reason`, a human `detail` and the original record, intact."""
    return orjson.dumps(
        {
            "reason": reason,
            "detail": detail[:2000],
            "service": service,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key_b64": base64.b64encode(key or b"").decode(),
            "value_b64": base64.b64encode(value or b"").decode(),
            "at": datetime.now(UTC).isoformat(),
        }
    )

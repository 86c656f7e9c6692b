"""Kafka records read outside faust, shaped like the part of faust's events the scorer reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast


@dataclass(frozen=True)
class Record:
    """An aiokafka record with its topic and partition, shaped like faust's message."""

    topic: str
    partition: int
    record: Any

    @property
    def offset(self) -> int:
        return int(self.record.offset)

    @property
    def key(self) -> bytes | None:
        return cast(bytes | None, self.record.key)

    @property
    def value(self) -> bytes | None:
        return cast(bytes | None, self.record.value)

    @property
    def timestamp(self) -> float:
        return float(self.record.timestamp) / 1000.0

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return list(self.record.headers or ())


@dataclass(eq=False)
class Undelivered:
    """An event as faust would hand it over (`event.message`), for a record read directly."""

    message: Record

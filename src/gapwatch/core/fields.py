"""Constrained field types shared by every event contract."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, StringConstraints
from pydantic_core import PydanticCustomError

# Item and event ids end up as Kafka keys and Prometheus exemplars: printable, no spaces.
ItemId = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/+#-]+$"),
]
EventId = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")
]
# Segment values (team, region, priority, ...): free text but bounded and without control chars.
Label = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$"),
]
LabelKey = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9_]*$")
]
Labels = Annotated[dict[LabelKey, Label], Field(max_length=32)]
Text = Annotated[str, StringConstraints(strict=True, max_length=4000)]
Source = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=512, pattern=r"^[\x21-\x7e]+$")
]


def _require_timestamp_text(value: Any) -> Any:
    # Lax pydantic would take 1700000000 as a Unix time; contracts demand an explicit ISO 8601
    # timestamp so that a unit mix-up (ms vs s) fails loudly instead of landing in 1970 or 55000.
    if isinstance(value, str | datetime):
        return value
    raise PydanticCustomError(
        "timestamp_type", "expected an ISO 8601 timestamp string with a timezone offset"
    )


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


Timestamp = Annotated[
    AwareDatetime, BeforeValidator(_require_timestamp_text), AfterValidator(_to_utc)
]
"""A timezone-aware instant, normalised to UTC. Naive timestamps are rejected."""

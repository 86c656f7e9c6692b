"""The time bound: how far ahead of its receiver's clock an event's own time may lie.

Event time moves watermarks, and watermarks never move back: one event stamped in the year 3000
would hold every later event of its partition "too late" for good. So every receiver refuses an
event whose time lies more than a configured skew ahead of its own clock (`not_after`):

- the ingest API and the bulk loader: a 422 / rejected line with the field path and the limit;
- the scorer: a dead letter with reason `from_the_future`, before any clock or watermark moves;
- `gapwatch replay`: `--until` plus the skew, or the wall clock plus the skew without `--until`;
- the alerter: a window snapshot whose `as_of` lies beyond it is not evaluated.

Times far in the past stay accepted (imports of history need them); the grace rule handles them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gapwatch.core.envelope import EventData

DEFAULT_MAX_FUTURE_SKEW_SECONDS = 300.0
"""Five minutes: well past any sane clock drift between a producer and gapwatch, and short
enough that a wrong year, month or day is refused instead of freezing a partition."""

FROM_THE_FUTURE = "from_the_future"
"""The reason (error code, dead-letter reason, metric label) of an event refused by the bound."""


def not_after(now: datetime, skew_seconds: float) -> datetime:
    """The latest event time a receiver whose clock reads `now` accepts."""
    return now + timedelta(seconds=skew_seconds)


_OCCURRENCE_FIELDS: dict[type[Any], str] = {}


def occurrence_field(data_type: type[EventData]) -> str:
    """The name of the field of `data_type` that `occurred_at` returns (`opened_at`, ...).

    By the contracts' convention it is the first timestamp field declared; a unit test holds
    every event type to it.
    """
    found = _OCCURRENCE_FIELDS.get(data_type)
    if found is not None:
        return found
    for name, info in data_type.model_fields.items():
        if name.endswith("_at") and info.annotation is datetime:
            _OCCURRENCE_FIELDS[data_type] = name
            return name
    raise TypeError(f"{data_type.__name__} has no occurrence timestamp field")


def times_beyond(event: Any, limit: datetime) -> list[tuple[str, datetime]]:
    """(field path, value) of each of the event's own times that lies after `limit`: its
    CloudEvents `time` and the time the fact occurred (`data.<x>_at`). Promised times (due
    times, arrival windows) are in the future by nature and are not bounded here."""
    out: list[tuple[str, datetime]] = []
    if event.time > limit:
        out.append(("time", event.time))
    data = event.data
    occurred = data.occurred_at
    if occurred > limit:
        out.append((f"data.{occurrence_field(type(data))}", occurred))
    return out


def beyond_reason(value: datetime, limit: datetime) -> str:
    """The human reason for a time refused by the bound: the time, the limit and the setting."""
    return (
        f"{value.isoformat()} is after {limit.isoformat()}, the latest event time accepted "
        "(the receiver's clock plus GAPWATCH_MAX_FUTURE_SKEW_SECONDS)"
    )


__all__ = [
    "DEFAULT_MAX_FUTURE_SKEW_SECONDS",
    "FROM_THE_FUTURE",
    "beyond_reason",
    "not_after",
    "occurrence_field",
    "times_beyond",
]

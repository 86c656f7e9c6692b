"""Constrained field types shared by every event contract."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

# Item and event ids end up as Kafka keys and Prometheus exemplars: printable, no spaces.
ItemId = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/+#-]+$"),
]
EventId = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")
]
# Segment values (team, region, priority, ...): free text, bounded, and nothing that does not
# show: C0 and C1 controls, bidi controls and invisible format characters are refused, so
# "\ufeffbilling\u200d" cannot become a series that shows as "billing" beside the real one.
LABEL_INVISIBLE = (
    "\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
    "\u2066-\u206f\ufeff\ufff9-\ufffb"
)
Label = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=128, pattern=f"^[^{LABEL_INVISIBLE}]+$"
    ),
]
LabelKey = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9_]*$")
]
Labels = Annotated[dict[LabelKey, Label], Field(max_length=32)]
Text = Annotated[str, StringConstraints(strict=True, max_length=4000)]
Source = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=512, pattern=r"^[\x21-\x7e]+$")
]


EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
"""The earliest instant a contract accepts: older than any history worth importing, and far
enough from year 1 that no arithmetic on it (minus a grace period, a window, a duration) can
leave the range of `datetime`."""
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""The instant every contract timestamp must be before: likewise far from year 9999. Event
times have a much tighter bound, relative to the receiver's clock (`gapwatch.core.timebound`)."""


def _to_utc(value: datetime) -> datetime:
    """`value` in UTC, or a validation error when it, or its UTC conversion, is out of range."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None  # 0001-01-01T00:00:00+14:00 and the like: no UTC instant exists
    if utc is None or not EARLIEST <= utc < LATEST:
        raise PydanticCustomError(
            "timestamp_range",
            "timestamp out of range: it must lie from {earliest} up to (not including) {latest}",
            {"earliest": EARLIEST.isoformat(), "latest": LATEST.isoformat()},
        )
    return utc


class _TimestampSchema:
    """A timezone-aware instant from an ISO 8601 string (or a datetime), normalised to UTC.

    Lax pydantic would take 1700000000 as a Unix time; contracts demand an explicit ISO 8601
    timestamp so that a unit mix-up (ms vs s) fails loudly instead of landing in 1970 or 55000.
    Any RFC 3339 offset is accepted (up to +/-23:59, as the standard allows); the instant it
    names in UTC must lie in [`EARLIEST`, `LATEST`), so that a conversion or a sum of durations
    can never overflow downstream. Built from pydantic-core schemas (a text-or-datetime check
    chained into an aware datetime) with one small function after: validation of every event
    runs through here.
    """

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        text_or_datetime = core_schema.union_schema(
            [core_schema.datetime_schema(strict=True), core_schema.str_schema(strict=True)],
            custom_error_type="timestamp_type",
            custom_error_message="expected an ISO 8601 timestamp string with a timezone offset",
        )
        aware = core_schema.datetime_schema(tz_constraint="aware")
        return core_schema.no_info_after_validator_function(
            _to_utc, core_schema.chain_schema([text_or_datetime, aware])
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "date-time"}


Timestamp = Annotated[datetime, _TimestampSchema]
"""A timezone-aware instant, normalised to UTC. Naive timestamps are rejected."""

"""Constrained field types shared by every event contract."""

from __future__ import annotations

from datetime import UTC, datetime
from operator import methodcaller
from typing import Annotated, Any

from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

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


class _TimestampSchema:
    """A timezone-aware instant from an ISO 8601 string (or a datetime), normalised to UTC.

    Lax pydantic would take 1700000000 as a Unix time; contracts demand an explicit ISO 8601
    timestamp so that a unit mix-up (ms vs s) fails loudly instead of landing in 1970 or 55000.
    Built from pydantic-core schemas alone (a text-or-datetime check chained into an aware datetime)
    with the C `astimezone` as the only call out: validation of every event runs through here,
    and Python validator functions were an eighth of the ingest's CPU.
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
            methodcaller("astimezone", UTC), core_schema.chain_schema([text_or_datetime, aware])
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "date-time"}


Timestamp = Annotated[datetime, _TimestampSchema]
"""A timezone-aware instant, normalised to UTC. Naive timestamps are rejected."""

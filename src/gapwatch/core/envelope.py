"""The CloudEvents 1.0 envelope (structured JSON mode) that wraps every gapwatch event."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from gapwatch.core.fields import EventId, ItemId, Source, Timestamp
from gapwatch.core.topics import Stream

SCHEMA_BASE_URI = "https://gapwatch.dev/schemas/"
"""Where the published JSON Schemas live: `schemas/` of this repository, by file name."""


def dataschema_of(event_type: str) -> str:
    """The `dataschema` of events gapwatch produces: their published schema's URI."""
    return f"{SCHEMA_BASE_URI}{event_type}.schema.json"


TYPE_PREFIX = "gapwatch."


class EventData(BaseModel):
    """Base of every event payload: frozen, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @property
    def subject_id(self) -> str:
        """The ticket or job this event is about: the Kafka key and the CloudEvents subject."""
        raise NotImplementedError

    @property
    def occurred_at(self) -> Any:
        """When the fact happened in the source system (event time)."""
        raise NotImplementedError

    def promised_times(self) -> Iterator[tuple[str, datetime]]:
        """(field path under `data`, value) of every time this event promises: due times,
        arrival windows. None by default."""
        return iter(())


DataT = TypeVar("DataT", bound=EventData)

TraceHeader = Annotated[str, StringConstraints(strict=True, max_length=512)]


class CloudEvent(BaseModel, Generic[DataT]):
    """A CloudEvents 1.0 envelope. `subject` is always the id of the item the event is about."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stream: ClassVar[Stream]
    event_type: ClassVar[str]

    specversion: Literal["1.0"] = Field(description="CloudEvents spec version; always 1.0.")
    id: EventId = Field(
        description="Unique per source; a repeated id is the same event and is deduplicated."
    )
    source: Source = Field(description="URI-reference of the producing system.")
    type: str = Field(description="Event type, `gapwatch.<entity>.<action>.v<version>`.")
    time: Timestamp = Field(description="When the event was produced, with a timezone offset.")
    subject: ItemId = Field(description="The item (ticket or job) id; must equal the id in data.")
    datacontenttype: Literal["application/json"] | None = None
    dataschema: Annotated[str, StringConstraints(strict=True, max_length=512)] | None = None
    traceparent: TraceHeader | None = Field(default=None, description="W3C trace context.")
    tracestate: TraceHeader | None = None
    data: DataT

    @model_validator(mode="after")
    def _subject_is_the_item(self) -> Self:
        if self.subject != self.data.subject_id:
            raise PydanticCustomError(
                "subject_mismatch",
                "subject {subject!r} must equal the item id {item_id!r} in data",
                {"subject": self.subject, "item_id": self.data.subject_id},
            )
        return self

    @property
    def key(self) -> bytes:
        """The Kafka record key: every event of one item, feedback included, shares a partition."""
        return self.subject.encode()

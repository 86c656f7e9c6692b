"""Customer feedback events: satisfaction scores and SERVQUAL expected-vs-perceived ratings."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from gapwatch.core.envelope import CloudEvent, EventData
from gapwatch.core.fields import ItemId, Text, Timestamp
from gapwatch.core.topics import Stream


class ItemKind(StrEnum):
    TICKET = "ticket"
    JOB = "job"


class ServqualDimension(StrEnum):
    """The five SERVQUAL dimensions (Parasuraman, Zeithaml and Berry, 1988)."""

    RELIABILITY = "reliability"
    RESPONSIVENESS = "responsiveness"
    ASSURANCE = "assurance"
    EMPATHY = "empathy"
    TANGIBLES = "tangibles"


# SERVQUAL's instrument uses a 7-point Likert scale for both expectation and perception.
Likert7 = Annotated[int, Field(strict=True, ge=1, le=7)]


class ServqualRating(BaseModel):
    """What the customer expected and what they perceived on one dimension (1-7)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    expected: Likert7
    perceived: Likert7


class FeedbackSubmitted(EventData):
    feedback_id: ItemId
    item_id: ItemId = Field(description="The ticket or job the feedback is about.")
    item_kind: ItemKind
    submitted_at: Timestamp
    csat: Annotated[int, Field(strict=True, ge=1, le=5)] | None = None
    nps: Annotated[int, Field(strict=True, ge=0, le=10)] | None = None
    servqual: dict[ServqualDimension, ServqualRating] = Field(default_factory=dict)
    comment: Text | None = None

    @model_validator(mode="after")
    def _has_a_score(self) -> Self:
        if self.csat is None and self.nps is None:
            raise PydanticCustomError(
                "score_missing", "feedback needs csat (1-5) and/or nps (0-10)"
            )
        return self

    @property
    def subject_id(self) -> str:
        return self.item_id

    @property
    def occurred_at(self) -> datetime:
        return self.submitted_at


class FeedbackSubmittedEvent(CloudEvent[FeedbackSubmitted]):
    stream: ClassVar[Stream] = Stream.FEEDBACK
    event_type: ClassVar[str] = "gapwatch.feedback.submitted.v1"
    type: Literal["gapwatch.feedback.submitted.v1"]

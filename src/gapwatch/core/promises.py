"""Promise vocabulary shared by tickets and jobs: kinds, windows and why a promise moved."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from gapwatch.core.fields import Timestamp

MAX_PROMISE_AHEAD = timedelta(days=3 * 366 + 2)
"""How far after its event a promised time may lie: the business calendars' search horizon.
A promise further out is refused at validation (`promise_horizon`), as no calendar could answer
for it and its business-time gap would walk every day in between."""


class PromiseKind(StrEnum):
    """What was promised. A closed set: it becomes a bounded Prometheus label."""

    FIRST_RESPONSE = "first_response"
    NEXT_RESPONSE = "next_response"
    RESOLUTION = "resolution"
    ARRIVAL = "arrival"
    COMPLETION = "completion"


class ChangeReason(StrEnum):
    """Who moved a promise: a customer's request does not count against the business."""

    CUSTOMER_REQUEST = "customer_request"
    INTERNAL = "internal"


class ExplicitPromise(BaseModel):
    """A promise stated on the item itself, with an absolute due time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: PromiseKind
    due_at: Timestamp


class ArrivalWindow(BaseModel):
    """A promised arrival window [start, end]."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: Timestamp
    end: Timestamp

    @model_validator(mode="after")
    def _end_after_start(self) -> Self:
        if self.end <= self.start:
            raise PydanticCustomError("window_order", "window end must be after window start")
        return self

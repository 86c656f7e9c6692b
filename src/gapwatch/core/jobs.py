"""Field-service job events: the promised arrival window and what the technician did."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from gapwatch.core.envelope import CloudEvent, EventData
from gapwatch.core.fields import ItemId, Label, Labels, Text, Timestamp
from gapwatch.core.promises import ArrivalWindow, ChangeReason
from gapwatch.core.topics import Stream


class _JobData(EventData):
    job_id: ItemId

    @property
    def subject_id(self) -> str:
        return self.job_id


class JobScheduled(_JobData):
    created_at: Timestamp
    window: ArrivalWindow = Field(description="The promised arrival window.")
    promised_completion_at: Timestamp | None = None
    service_type: Label
    team: Label
    technician: Label | None = None
    region: Label
    customer_id: ItemId
    customer_tier: Label
    labels: Labels = Field(default_factory=dict)

    @model_validator(mode="after")
    def _completion_after_window_start(self) -> Self:
        done = self.promised_completion_at
        if done is not None and done < self.window.start:
            raise PydanticCustomError(
                "completion_before_window",
                "promised_completion_at must not be before the arrival window starts",
            )
        return self

    @property
    def occurred_at(self) -> datetime:
        return self.created_at

    def promised_times(self) -> Iterator[tuple[str, datetime]]:
        yield "window.start", self.window.start
        yield "window.end", self.window.end
        if self.promised_completion_at is not None:
            yield "promised_completion_at", self.promised_completion_at


class JobRescheduled(_JobData):
    rescheduled_at: Timestamp
    window: ArrivalWindow
    reason: ChangeReason

    @property
    def occurred_at(self) -> datetime:
        return self.rescheduled_at

    def promised_times(self) -> Iterator[tuple[str, datetime]]:
        yield "window.start", self.window.start
        yield "window.end", self.window.end


class JobDispatched(_JobData):
    dispatched_at: Timestamp
    technician: Label | None = None

    @property
    def occurred_at(self) -> datetime:
        return self.dispatched_at


class JobArrived(_JobData):
    arrived_at: Timestamp

    @property
    def occurred_at(self) -> datetime:
        return self.arrived_at


class JobCompleted(_JobData):
    completed_at: Timestamp
    fixed: bool = Field(strict=True, description="Was the problem fixed on this visit?")
    revisit_of: ItemId | None = Field(
        default=None, description="The earlier job this visit repeats, if it is a revisit."
    )

    @property
    def occurred_at(self) -> datetime:
        return self.completed_at


class JobCancelled(_JobData):
    cancelled_at: Timestamp
    reason: ChangeReason | None = None
    note: Text | None = None

    @property
    def occurred_at(self) -> datetime:
        return self.cancelled_at


class JobScheduledEvent(CloudEvent[JobScheduled]):
    stream: ClassVar[Stream] = Stream.JOBS
    event_type: ClassVar[str] = "gapwatch.job.scheduled.v1"
    type: Literal["gapwatch.job.scheduled.v1"]


class JobRescheduledEvent(CloudEvent[JobRescheduled]):
    stream: ClassVar[Stream] = Stream.JOBS
    event_type: ClassVar[str] = "gapwatch.job.rescheduled.v1"
    type: Literal["gapwatch.job.rescheduled.v1"]


class JobDispatchedEvent(CloudEvent[JobDispatched]):
    stream: ClassVar[Stream] = Stream.JOBS
    event_type: ClassVar[str] = "gapwatch.job.dispatched.v1"
    type: Literal["gapwatch.job.dispatched.v1"]


class JobArrivedEvent(CloudEvent[JobArrived]):
    stream: ClassVar[Stream] = Stream.JOBS
    event_type: ClassVar[str] = "gapwatch.job.arrived.v1"
    type: Literal["gapwatch.job.arrived.v1"]


class JobCompletedEvent(CloudEvent[JobCompleted]):
    stream: ClassVar[Stream] = Stream.JOBS
    event_type: ClassVar[str] = "gapwatch.job.completed.v1"
    type: Literal["gapwatch.job.completed.v1"]


class JobCancelledEvent(CloudEvent[JobCancelled]):
    stream: ClassVar[Stream] = Stream.JOBS
    event_type: ClassVar[str] = "gapwatch.job.cancelled.v1"
    type: Literal["gapwatch.job.cancelled.v1"]

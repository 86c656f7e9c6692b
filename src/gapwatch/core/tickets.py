"""Support-ticket events: what was promised on a ticket and what happened to it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from gapwatch.core.envelope import CloudEvent, EventData
from gapwatch.core.fields import ItemId, Label, Labels, Text, Timestamp
from gapwatch.core.promises import ChangeReason, ExplicitPromise, PromiseKind
from gapwatch.core.topics import Stream


class ReplyAuthor(StrEnum):
    AGENT = "agent"
    CUSTOMER = "customer"


class Visibility(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"


class _TicketData(EventData):
    ticket_id: ItemId

    @property
    def subject_id(self) -> str:
        return self.ticket_id


class TicketOpened(_TicketData):
    opened_at: Timestamp
    priority: Label
    channel: Label = Field(description="e.g. email, phone, chat, web, portal.")
    customer_id: ItemId
    customer_tier: Label
    team: Label
    region: Label
    labels: Labels = Field(default_factory=dict, description="Free-form segment labels.")
    promises: list[ExplicitPromise] = Field(
        default_factory=list, max_length=16, description="Promises stated on the ticket itself."
    )
    sla_policy: Label | None = Field(
        default=None, description="Name of the SLA policy to apply, instead of label matching."
    )

    @property
    def occurred_at(self) -> datetime:
        return self.opened_at

    def promised_times(self) -> Iterator[tuple[str, datetime]]:
        for index, promise in enumerate(self.promises):
            yield f"promises[{index}].due_at", promise.due_at


class TicketStatusChanged(_TicketData):
    changed_at: Timestamp
    status: Label = Field(description="The new status, in the source system's vocabulary.")

    @property
    def occurred_at(self) -> datetime:
        return self.changed_at


class TicketReplied(_TicketData):
    replied_at: Timestamp
    author: ReplyAuthor
    visibility: Visibility = Visibility.PUBLIC

    @property
    def occurred_at(self) -> datetime:
        return self.replied_at


class TicketPromiseChanged(_TicketData):
    changed_at: Timestamp
    kind: PromiseKind
    due_at: Timestamp = Field(description="The new due time; the original one is kept.")
    reason: ChangeReason

    @property
    def occurred_at(self) -> datetime:
        return self.changed_at

    def promised_times(self) -> Iterator[tuple[str, datetime]]:
        yield "due_at", self.due_at


class TicketResolved(_TicketData):
    resolved_at: Timestamp
    resolution: Text | None = None

    @property
    def occurred_at(self) -> datetime:
        return self.resolved_at


class TicketReopened(_TicketData):
    reopened_at: Timestamp

    @property
    def occurred_at(self) -> datetime:
        return self.reopened_at


class TicketClosed(_TicketData):
    closed_at: Timestamp

    @property
    def occurred_at(self) -> datetime:
        return self.closed_at


class TicketOpenedEvent(CloudEvent[TicketOpened]):
    stream: ClassVar[Stream] = Stream.TICKETS
    event_type: ClassVar[str] = "gapwatch.ticket.opened.v1"
    type: Literal["gapwatch.ticket.opened.v1"]


class TicketStatusChangedEvent(CloudEvent[TicketStatusChanged]):
    stream: ClassVar[Stream] = Stream.TICKETS
    event_type: ClassVar[str] = "gapwatch.ticket.status_changed.v1"
    type: Literal["gapwatch.ticket.status_changed.v1"]


class TicketRepliedEvent(CloudEvent[TicketReplied]):
    stream: ClassVar[Stream] = Stream.TICKETS
    event_type: ClassVar[str] = "gapwatch.ticket.replied.v1"
    type: Literal["gapwatch.ticket.replied.v1"]


class TicketPromiseChangedEvent(CloudEvent[TicketPromiseChanged]):
    stream: ClassVar[Stream] = Stream.TICKETS
    event_type: ClassVar[str] = "gapwatch.ticket.promise_changed.v1"
    type: Literal["gapwatch.ticket.promise_changed.v1"]


class TicketResolvedEvent(CloudEvent[TicketResolved]):
    stream: ClassVar[Stream] = Stream.TICKETS
    event_type: ClassVar[str] = "gapwatch.ticket.resolved.v1"
    type: Literal["gapwatch.ticket.resolved.v1"]


class TicketReopenedEvent(CloudEvent[TicketReopened]):
    stream: ClassVar[Stream] = Stream.TICKETS
    event_type: ClassVar[str] = "gapwatch.ticket.reopened.v1"
    type: Literal["gapwatch.ticket.reopened.v1"]


class TicketClosedEvent(CloudEvent[TicketClosed]):
    stream: ClassVar[Stream] = Stream.TICKETS
    event_type: ClassVar[str] = "gapwatch.ticket.closed.v1"
    type: Literal["gapwatch.ticket.closed.v1"]

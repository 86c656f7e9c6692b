"""Promise states: each promise's current state, the scorer's output on gapwatch.promises.v1.

One record per promise (key: item id + promise kind), written whenever an input event touches its
item or a timer changes it (at risk, overdue), and once as `closed` when it is delivered or
cancelled. The topic is compacted: its latest record per key is the promise's state, so any
service can rebuild the set of open promises from it (the alerter's `/v1/promises` view does).
Times left and overdue are as of `changed_at`, the event time of the change; a reader computes
them again at its own now from `due_at`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from gapwatch.core.envelope import CloudEvent, EventData, dataschema_of
from gapwatch.core.feedback import ItemKind
from gapwatch.core.fields import ItemId, Label, LabelKey, Timestamp
from gapwatch.core.gaps import GapEvent, Outcome, VersionRef
from gapwatch.core.promises import PromiseKind
from gapwatch.core.topics import Stream

PROMISE_SOURCE = "urn:gapwatch:scorer"
PROMISE_STATE_TYPE = "gapwatch.promise.state.v1"
PROMISE_ID_NAMESPACE = uuid.UUID("8a4f4d0e-2c8b-4d5e-9a57-3f6b1f0c9e21")


class PromiseState(StrEnum):
    """Where a promise stands. A closed set: API filters and bounded counts use it."""

    OPEN = "open"
    AT_RISK = "at_risk"
    OVERDUE = "overdue"
    PAUSED = "paused"
    CLOSED = "closed"


class PromiseStateData(EventData):
    """One promise of one item, as it stands after the change at `changed_at`."""

    item_id: ItemId
    item_kind: ItemKind
    promise_kind: PromiseKind
    cycle: Annotated[int, Field(ge=0)]
    round: Annotated[int, Field(ge=0)] = 0
    segment: dict[LabelKey, Label] = Field(description="The item's segment labels.")
    state: PromiseState
    outcome: Outcome | None = Field(
        default=None, description="How a closed promise ended: met, delivered_late, cancelled."
    )
    changed_at: Timestamp = Field(description="Event time of the change this record states.")
    started_at: Timestamp
    due_at: Timestamp = Field(description="The current due time (window end for arrivals).")
    original_due_at: Timestamp = Field(description="The first due time; drift = due - this.")
    window_start: Timestamp | None = None
    delivered_at: Timestamp | None = None
    time_left_seconds: float | None = Field(
        default=None, description="due - changed_at while not yet due (open, at risk, paused)."
    )
    time_left_business_seconds: float | None = None
    overdue_by_seconds: float | None = Field(
        default=None, description="changed_at - due once overdue (no delivery by the due time)."
    )
    overdue_by_business_seconds: float | None = None
    policy: VersionRef | None = None
    calendar: VersionRef | None = None

    @property
    def subject_id(self) -> str:
        return self.item_id

    @property
    def occurred_at(self) -> datetime:
        return self.changed_at


class PromiseStateEvent(CloudEvent[PromiseStateData]):
    stream: ClassVar[Stream] = Stream.PROMISES
    event_type: ClassVar[str] = PROMISE_STATE_TYPE
    type: Literal["gapwatch.promise.state.v1"]

    @property
    def key(self) -> bytes:
        return promise_key(self.data.item_id, self.data.promise_kind)


def promise_key(item_id: str, kind: PromiseKind) -> bytes:
    """The compacted topic's key: item id and promise kind (`|` is in no item id)."""
    return f"{item_id}|{kind.value}".encode()


def make_promise_state_event(data: PromiseStateData) -> PromiseStateEvent:
    """Wrap `data`; the id is uuid5 of the promise and its state, the same live and in replay."""
    name = (
        f"{data.item_id}\x1f{data.promise_kind.value}\x1f{data.cycle}\x1f{data.round}"
        f"\x1f{data.state.value}\x1f{data.due_at.isoformat()}\x1f{data.changed_at.isoformat()}"
    )
    return PromiseStateEvent(
        specversion="1.0",
        id=str(uuid.uuid5(PROMISE_ID_NAMESPACE, name)),
        source=PROMISE_SOURCE,
        type=PROMISE_STATE_TYPE,
        dataschema=dataschema_of(PROMISE_STATE_TYPE),
        time=data.changed_at,
        subject=data.item_id,
        data=data,
    )


_CLOSING = frozenset({Outcome.MET, Outcome.DELIVERED_LATE, Outcome.CANCELLED})


@dataclass(slots=True)
class PromiseChanges:
    """The items whose promises a step (a batch of events, a tick) changed: for each, the time
    of its latest change and the promises (kind, cycle, round) the step closed."""

    items: dict[str, tuple[datetime, set[tuple[PromiseKind, int, int]]]] = field(
        default_factory=dict
    )

    def note_event(self, item_id: str, at: datetime) -> None:
        """An input event of the item (not feedback, which moves no promise) at `at`."""
        held = self.items.get(item_id)
        if held is None:
            self.items[item_id] = (at, set())
        elif at > held[0]:
            self.items[item_id] = (at, held[1])

    def note_gaps(self, gaps: Iterable[GapEvent]) -> None:
        """Gap events the step emitted: at risk, breached and closing outcomes change a state."""
        for gap in gaps:
            data = gap.data
            if data.outcome is Outcome.FEEDBACK:
                continue
            self.note_event(data.item_id, data.outcome_at)
            if data.outcome in _CLOSING:
                self.items[data.item_id][1].add((data.promise_kind, data.cycle, data.round))

    def __iter__(self) -> Iterator[tuple[str, datetime, set[tuple[PromiseKind, int, int]]]]:
        for item_id, (at, closed) in self.items.items():
            yield item_id, at, closed


__all__ = [
    "PROMISE_STATE_TYPE",
    "PromiseChanges",
    "PromiseState",
    "PromiseStateData",
    "PromiseStateEvent",
    "make_promise_state_event",
    "promise_key",
]

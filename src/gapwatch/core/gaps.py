"""Gap events: the scorer's output contract on gapwatch.gaps.v1 (one per promise outcome)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from gapwatch.core.envelope import CloudEvent, EventData, dataschema_of
from gapwatch.core.feedback import ItemKind, ServqualDimension
from gapwatch.core.fields import EventId, ItemId, Label, LabelKey, Timestamp
from gapwatch.core.promises import PromiseKind
from gapwatch.core.topics import Stream

GAP_SOURCE = "urn:gapwatch:scorer"
# Fixed namespace: gap event ids are uuid5 of what happened, so a replay yields the same ids.
GAP_ID_NAMESPACE = uuid.UUID("5b0c7e3e-6a53-4f0e-9d0c-8f3f6f0a2b71")


class Outcome(StrEnum):
    """What became of a promise (or, for `feedback`, what the customer said about the item)."""

    MET = "met"
    BREACHED = "breached"
    AT_RISK = "at_risk"
    DELIVERED_LATE = "delivered_late"
    CANCELLED = "cancelled"
    FEEDBACK = "feedback"


class ArrivalOutcome(StrEnum):
    """Delivery against a window [start, end]."""

    EARLY = "early"
    ON_TIME = "on_time"
    LATE = "late"


class VersionRef(BaseModel):
    """Which version of a policy or calendar produced a result."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Label
    version: Annotated[int, Field(ge=0)]


class FeedbackJoin(BaseModel):
    """Feedback joined with the item's promise it follows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feedback_id: ItemId
    feedback_event_id: EventId
    submitted_at: Timestamp
    csat: Annotated[int, Field(ge=1, le=5)] | None = None
    nps: Annotated[int, Field(ge=0, le=10)] | None = None
    servqual_gap: dict[ServqualDimension, float] = Field(
        default_factory=dict, description="perceived - expected per dimension (SERVQUAL gap 5)."
    )


class GapData(EventData):
    """One outcome of one promise of one item, with the gap between promised and delivered."""

    item_id: ItemId
    item_kind: ItemKind
    promise_kind: PromiseKind
    cycle: Annotated[int, Field(ge=0, description="Resolution cycle; a reopen starts a new one.")]
    round: Annotated[
        int,
        Field(ge=0, description="Which promise of this kind in the cycle (next_response repeats)."),
    ] = 0
    segment: dict[LabelKey, Label] = Field(description="The item's segment labels.")
    outcome: Outcome
    outcome_at: Timestamp = Field(
        description="Event time of the outcome: delivery time, or the due time for a breach."
    )
    started_at: Timestamp = Field(description="When the promise's clock started.")
    promised_at: Timestamp = Field(description="The current due time (window end for arrivals).")
    original_promised_at: Timestamp = Field(
        description="The first due time; drift = current - this."
    )
    window_start: Timestamp | None = None
    delivered_at: Timestamp | None = None
    gap_seconds: float | None = Field(
        default=None, description="delivered - promised, wall seconds (negative = early)."
    )
    gap_business_seconds: float | None = Field(
        default=None, description="delivered - promised in business time of the calendar."
    )
    promised_seconds: float = Field(description="promised - started, wall seconds.")
    delivered_seconds: float | None = Field(default=None, description="delivered - started.")
    drift_seconds: float = Field(default=0.0, description="promised - original promised.")
    arrival: ArrivalOutcome | None = None
    at_risk_fraction: float | None = Field(default=None, gt=0, lt=1)
    policy: VersionRef | None = None
    calendar: VersionRef | None = None
    caused_by: EventId = Field(description="Id of the input event that caused this outcome.")
    corrects: EventId | None = Field(
        default=None,
        description="Id of an earlier gap event this one overrides (a late event within the "
        "grace period showed the earlier outcome was wrong).",
    )
    feedback: FeedbackJoin | None = None
    fixed: bool | None = Field(
        default=None, description="Job completions: was it fixed on this visit (first-time fix)."
    )
    revisit: bool | None = Field(default=None, description="Job completions: a repeat visit.")

    @property
    def subject_id(self) -> str:
        return self.item_id

    @property
    def occurred_at(self) -> datetime:
        return self.outcome_at


GapType = Literal[
    "gapwatch.gap.met.v1",
    "gapwatch.gap.breached.v1",
    "gapwatch.gap.at_risk.v1",
    "gapwatch.gap.delivered_late.v1",
    "gapwatch.gap.cancelled.v1",
    "gapwatch.gap.feedback.v1",
]


class GapEvent(CloudEvent[GapData]):
    stream: ClassVar[Stream] = Stream.GAPS
    event_type: ClassVar[str] = "gapwatch.gap.v1"
    type: GapType


def gap_type(outcome: Outcome) -> str:
    return f"gapwatch.gap.{outcome.value}.v1"


def gap_event_id(
    item_id: str, kind: PromiseKind, cycle: int, round_: int, outcome: Outcome, extra: str = ""
) -> str:
    """Deterministic id: the same promise outcome always gets the same id, live or in replay."""
    name = f"{item_id}\x1f{kind.value}\x1f{cycle}\x1f{round_}\x1f{outcome.value}\x1f{extra}"
    return str(uuid.uuid5(GAP_ID_NAMESPACE, name))


GAP_SCHEMA = dataschema_of("gapwatch.gap.v1")


def make_gap_event(data: GapData, extra_id: str = "", time: datetime | None = None) -> GapEvent:
    """Wrap `data` in its envelope; `extra_id` separates repeated outcomes (e.g. at-risk levels)."""
    return GapEvent(
        specversion="1.0",
        id=gap_event_id(
            data.item_id, data.promise_kind, data.cycle, data.round, data.outcome, extra_id
        ),
        source=GAP_SOURCE,
        type=gap_type(data.outcome),
        dataschema=GAP_SCHEMA,
        time=time or data.outcome_at,
        subject=data.item_id,
        data=data,
    )

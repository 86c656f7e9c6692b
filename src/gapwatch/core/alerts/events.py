"""Alert events: the alerter's output contract on gapwatch.alerts.v1 (one per transition)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from gapwatch.core.alerts.lifecycle import AlertState, Transition
from gapwatch.core.alerts.rules import Severity
from gapwatch.core.envelope import CloudEvent, EventData, dataschema_of
from gapwatch.core.fields import ItemId, Label, LabelKey, Timestamp
from gapwatch.core.promises import PromiseKind
from gapwatch.core.topics import Stream

ALERT_SOURCE = "urn:gapwatch:alerter"

AlertType = Literal[
    "gapwatch.alert.pending.v1",
    "gapwatch.alert.firing.v1",
    "gapwatch.alert.resolved.v1",
    "gapwatch.alert.inactive.v1",
]


class PageItem(BaseModel):
    """One promise a page names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    item_id: ItemId
    promise_kind: PromiseKind
    state: Literal["overdue", "at_risk"]
    due_at: Timestamp
    overdue_by_seconds: float | None = None
    time_left_seconds: float | None = None


class PageItems(BaseModel):
    """How many promises of the alert's group are overdue and at risk, and the top ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    overdue: int = Field(ge=0)
    at_risk: int = Field(ge=0)
    top: list[PageItem] = Field(max_length=100)


class AlertData(EventData):
    """One alert transition: which alert, from what to what, and the evidence."""

    fingerprint: ItemId = Field(description="Stable identity of rule + group labels.")
    rule: str = Field(max_length=64)
    labels: dict[LabelKey, Label] = Field(description="The group labels of the alert.")
    severity: Severity
    from_state: AlertState
    to_state: AlertState
    at: Timestamp = Field(description="When the transition happened (evaluation time).")
    sequence: int = Field(ge=1, description="Transitions of this alert so far, this one included.")
    summary: str = Field(max_length=2000)
    figures: dict[str, Any] = Field(description="The numbers that were compared.")
    window: str = Field(max_length=16, description="Window of the figures ('now' for counts).")
    latest_breached: list[ItemId] = Field(max_length=20, description="Newest breached item ids.")
    firing_since: Timestamp | None = None
    runbook_url: str = Field(default="", max_length=2000)
    dashboard_url: str = Field(default="", max_length=2000)
    items: PageItems | None = Field(
        default=None,
        description="The promises behind the page (firing and resolved transitions): overdue "
        "and at-risk counts of the alert's group, and its most overdue items.",
    )

    @property
    def subject_id(self) -> str:
        return self.fingerprint

    @property
    def occurred_at(self) -> Any:
        return self.at


class AlertEvent(CloudEvent[AlertData]):
    stream: ClassVar[Stream] = Stream.ALERTS
    event_type: ClassVar[str] = "gapwatch.alert.v1"
    type: AlertType


def alert_event(transition: Transition) -> AlertEvent:
    """The CloudEvent of a transition; its id is the transition id, so consumers can dedup."""
    data = transition.as_dict()
    transition_id = data.pop("id")
    return AlertEvent(
        specversion="1.0",
        id=transition_id,
        source=ALERT_SOURCE,
        type=f"gapwatch.alert.{transition.to_state.value}.v1",
        dataschema=dataschema_of(AlertEvent.event_type),
        time=transition.at,
        subject=transition.fingerprint,
        data=AlertData.model_validate(data),
    )

"""The catalogue of input event types: CloudEvents `type` -> model and stream."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gapwatch.core.envelope import CloudEvent
from gapwatch.core.feedback import FeedbackSubmittedEvent
from gapwatch.core.jobs import (
    JobArrivedEvent,
    JobCancelledEvent,
    JobCompletedEvent,
    JobDispatchedEvent,
    JobRescheduledEvent,
    JobScheduledEvent,
)
from gapwatch.core.tickets import (
    TicketClosedEvent,
    TicketOpenedEvent,
    TicketPromiseChangedEvent,
    TicketReopenedEvent,
    TicketRepliedEvent,
    TicketResolvedEvent,
    TicketStatusChangedEvent,
)

AnyInputEvent = CloudEvent[Any]

INPUT_EVENT_MODELS: tuple[type[AnyInputEvent], ...] = (
    TicketOpenedEvent,
    TicketStatusChangedEvent,
    TicketRepliedEvent,
    TicketPromiseChangedEvent,
    TicketResolvedEvent,
    TicketReopenedEvent,
    TicketClosedEvent,
    JobScheduledEvent,
    JobRescheduledEvent,
    JobDispatchedEvent,
    JobArrivedEvent,
    JobCompletedEvent,
    JobCancelledEvent,
    FeedbackSubmittedEvent,
)

MODEL_BY_TYPE: Mapping[str, type[AnyInputEvent]] = {m.event_type: m for m in INPUT_EVENT_MODELS}

_VERSIONED = re.compile(r"^(?P<base>.+)\.v(?P<version>[0-9]+)$")
_SUPPORTED_VERSIONS: dict[str, list[str]] = {}
for _type in MODEL_BY_TYPE:
    _match = _VERSIONED.match(_type)
    assert _match is not None, _type
    _SUPPORTED_VERSIONS.setdefault(_match["base"], []).append(_type)


def supported_versions_of(event_type: str) -> list[str] | None:
    """The known types sharing `event_type`'s name with another version, or None if unknown."""
    match = _VERSIONED.match(event_type)
    base = match["base"] if match else event_type
    return _SUPPORTED_VERSIONS.get(base)

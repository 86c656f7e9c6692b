"""Promise states (gapwatch.promises.v1): what each step states about each promise."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gapwatch.config import load_policies
from gapwatch.core.clock import ClockConfig
from gapwatch.core.examples import EXAMPLES, PROMISE_STATE_EXAMPLE
from gapwatch.core.promise_states import (
    PromiseChanges,
    PromiseState,
    PromiseStateEvent,
    make_promise_state_event,
    promise_key,
)
from gapwatch.core.promises import PromiseKind
from gapwatch.core.scoring import Scoring, ScoringConfig
from gapwatch.core.validation import validate_event

POLICIES = Path(__file__).resolve().parents[2] / "deploy" / "config" / "policies.yaml"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def config() -> ScoringConfig:
    return ScoringConfig(ClockConfig.from_policies(load_policies(POLICIES)))


def opened(item: str, due: datetime) -> Any:
    doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    doc.update(id=f"open-{item}", subject=item, time=T0.isoformat())
    doc["data"].update(
        ticket_id=item,
        opened_at=T0.isoformat(),
        promises=[{"kind": "first_response", "due_at": due.isoformat()}],
    )
    doc["data"].pop("sla_policy")
    return validate_event(doc)


def replied(item: str, at: datetime) -> Any:
    doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.replied.v1"])
    doc.update(id=f"reply-{item}", subject=item, time=at.isoformat())
    doc["data"].update(ticket_id=item, replied_at=at.isoformat())
    return validate_event(doc)


def states(scoring: Scoring, gaps: Any, item: str = "", at: datetime | None = None) -> Any:
    """What the scorer publishes after a step about first responses (the explicit promise; the
    policies may add others), as (kind, state, outcome, data) per record."""
    changes = PromiseChanges()
    if item and at is not None:
        changes.note_event(item, at)
    changes.note_gaps(gaps)
    out = []
    for item_id, when, closed in changes:
        for data in scoring.items[item_id].promise_states(when, closed):
            if data.promise_kind is PromiseKind.FIRST_RESPONSE:
                out.append((data.promise_kind, data.state, data.outcome, data))
    return out


def test_a_promise_is_stated_open_at_risk_overdue_then_closed_once(config: ScoringConfig):
    scoring = Scoring(config)
    due = T0 + timedelta(minutes=20)
    gaps = scoring.process_and_tick(opened("T-1", due))
    [(kind, state, outcome, data)] = states(scoring, gaps, "T-1", T0)
    assert (kind, state, outcome) == (PromiseKind.FIRST_RESPONSE, PromiseState.OPEN, None)
    assert data.time_left_seconds == 1200 and data.overdue_by_seconds is None

    at_risk = scoring.tick(T0 + timedelta(minutes=16))
    assert [s[1] for s in states(scoring, at_risk)] == [PromiseState.AT_RISK]

    breach = scoring.tick(due + timedelta(microseconds=1))
    [(_, state, _, data)] = states(scoring, breach)
    assert state is PromiseState.OVERDUE and data.overdue_by_seconds == 0

    late = T0 + timedelta(minutes=50)
    gaps = scoring.process_and_tick(replied("T-1", late))
    first = [s for s in states(scoring, gaps, "T-1", late) if s[0] is PromiseKind.FIRST_RESPONSE]
    assert [(s[1], s[2].value) for s in first] == [(PromiseState.CLOSED, "delivered_late")]
    # A later step of the item does not state the closed promise again.
    assert all(s[0] is not PromiseKind.FIRST_RESPONSE for s in states(scoring, [], "T-1", late))


def test_records_are_keyed_by_promise_and_ids_repeat_for_the_same_state(config: ScoringConfig):
    scoring = Scoring(config)
    gaps = scoring.process_and_tick(opened("T-2", T0 + timedelta(hours=1)))
    [(_, _, _, data)] = states(scoring, gaps, "T-2", T0)
    event = make_promise_state_event(data)
    assert event.key == promise_key("T-2", PromiseKind.FIRST_RESPONSE) == b"T-2|first_response"
    assert make_promise_state_event(data).id == event.id
    assert PromiseStateEvent.model_validate_json(event.model_dump_json()) == event


def test_the_published_example_is_a_valid_record():
    event = PromiseStateEvent.model_validate(PROMISE_STATE_EXAMPLE)
    assert event.data.state is PromiseState.OVERDUE

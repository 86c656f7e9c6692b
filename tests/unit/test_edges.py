"""Issue 20's edges: events stamped before their item's opening, promises due before it."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from gapwatch.config import load_policies
from gapwatch.core.clock import ClockConfig
from gapwatch.core.examples import EXAMPLES
from gapwatch.core.gaps import Outcome
from gapwatch.core.promises import PromiseKind
from gapwatch.core.scoring import Scoring, ScoringConfig, replay
from gapwatch.core.validation import EventRejected, validate_event

POLICIES = Path(__file__).resolve().parents[2] / "deploy" / "config" / "policies.yaml"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DUE = T0 + timedelta(minutes=30)


@pytest.fixture(scope="module")
def config() -> ScoringConfig:
    return ScoringConfig(ClockConfig.from_policies(load_policies(POLICIES)))


def opened() -> dict[str, Any]:
    doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    doc.update(id="open-E", subject="E-1", time=T0.isoformat())
    doc["data"].update(
        ticket_id="E-1",
        opened_at=T0.isoformat(),
        promises=[{"kind": "first_response", "due_at": DUE.isoformat()}],
    )
    doc["data"].pop("sla_policy")
    return doc


def replied(at: datetime) -> dict[str, Any]:
    doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.replied.v1"])
    doc.update(id="reply-E", subject="E-1", time=at.isoformat())
    doc["data"].update(ticket_id="E-1", replied_at=at.isoformat())
    return doc


def first_responses(result: Any) -> list[tuple[Outcome, datetime | None, float | None]]:
    return [
        (e.data.outcome, e.data.delivered_at, e.data.gap_seconds)
        for e in result.gap_events
        if e.data.promise_kind is PromiseKind.FIRST_RESPONSE
        and e.data.outcome is not Outcome.AT_RISK
    ]


@pytest.mark.parametrize("order", ["opening first", "reply first"])
def test_an_event_stamped_before_the_opening_takes_effect_at_it(config: ScoringConfig, order: str):
    """Today such a reply was silently ignored and the ticket breached. Now it counts, at the
    opening, whichever arrives first, and it is counted."""
    early = T0 - timedelta(minutes=2)
    docs = [opened(), replied(early)]
    if order == "reply first":
        docs.reverse()
    result = replay([orjson.dumps(d) for d in docs], config)
    assert first_responses(result) == [(Outcome.MET, T0, -1800.0)]
    assert result.scoring.before_opened == 1
    assert result.rejected == []
    # No breach later: the promise is met.
    assert all(
        e.data.outcome is not Outcome.BREACHED
        for e in result.scoring.tick(DUE + timedelta(hours=1))
    )


def test_the_live_core_counts_it_once(config: ScoringConfig):
    scoring = Scoring(config)
    scoring.process(validate_event(opened()))
    scoring.process(validate_event(replied(T0 - timedelta(seconds=1))))
    scoring.process(validate_event(replied(T0 - timedelta(seconds=1))))  # a redelivery
    assert scoring.before_opened == 1


def test_a_promise_due_before_its_opening_is_refused_at_validation():
    doc = opened()
    doc["data"]["promises"][0]["due_at"] = (T0 - timedelta(minutes=1)).isoformat()
    with pytest.raises(EventRejected) as caught:
        validate_event(doc)
    assert [(e.path, e.code) for e in caught.value.errors] == [
        ("data.promises[0].due_at", "promise_before_opening")
    ]
    job = copy.deepcopy(EXAMPLES["gapwatch.job.scheduled.v1"])
    created = datetime.fromisoformat(job["data"]["created_at"])
    job["data"]["window"] = {
        "start": (created - timedelta(hours=2)).isoformat(),
        "end": (created - timedelta(hours=1)).isoformat(),
    }
    job["data"].pop("promised_completion_at", None)
    with pytest.raises(EventRejected) as caught:
        validate_event(job)
    assert [(e.path, e.code) for e in caught.value.errors] == [
        ("data.window.end", "promise_before_opening")
    ]

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


def test_two_promises_of_one_kind_in_one_opening_are_refused_naming_the_repeat():
    """Issue 27: one of them was silently dropped."""
    doc = opened()
    doc["data"]["promises"] *= 3
    with pytest.raises(EventRejected) as caught:
        validate_event(doc)
    assert caught.value.rejection.value == "schema_invalid"
    assert [(e.path, e.code) for e in caught.value.errors] == [
        ("data.promises[1].kind", "duplicate_promise_kind"),
        ("data.promises[2].kind", "duplicate_promise_kind"),
    ]
    assert "data.promises[0]" in caught.value.errors[0].reason


def test_an_unknown_sla_policy_falls_back_to_matching_and_is_counted(config: ScoringConfig):
    """Issue 27: a named policy the configuration lacks fell back to label matching unseen."""
    scoring = Scoring(config)
    known = opened()
    known["data"]["sla_policy"] = "gold-support"
    scoring.process(validate_event(known))
    assert scoring.unknown_policies == 0
    typo = opened()
    typo.update(id="open-F", subject="F-1")
    typo["data"].update(ticket_id="F-1", sla_policy="gold-suport")
    scoring.process(validate_event(typo))
    assert scoring.unknown_policies == 1
    # Label matching chose the policy: the same one an opening naming none gets.
    plain = opened()
    plain.update(id="open-G", subject="G-1")
    plain["data"].update(ticket_id="G-1")
    scoring.process(validate_event(plain))
    assert scoring.items["F-1"]._state.policy is scoring.items["G-1"]._state.policy is not None
    assert scoring.unknown_policies == 1


def feedback(item: str, at: datetime, n: int) -> dict[str, Any]:
    doc = copy.deepcopy(EXAMPLES["gapwatch.feedback.submitted.v1"])
    doc.update(id=f"fb-{item}-{n}", subject=item, time=at.isoformat())
    doc["data"].update(item_id=item, feedback_id=f"F-{item}-{n}", submitted_at=at.isoformat())
    return doc


def test_feedback_that_never_joins_is_counted_then_dropped_after_the_hold():
    """Issue 20: feedback for an item never seen, or never delivered, waited forever unseen."""
    config = ScoringConfig(
        ClockConfig.from_policies(load_policies(POLICIES)), feedback_hold_seconds=86400
    )
    scoring = Scoring(config)
    scoring.process(validate_event(feedback("GHOST-1", T0, 1)))  # no such item, ever
    scoring.process(validate_event(opened()))  # E-1: its first response is never given
    scoring.process(validate_event(feedback("E-1", T0 + timedelta(minutes=5), 1)))
    assert scoring.feedback_waiting() == {"item_never_seen": 1, "never_delivered": 1}

    assert scoring.sweep_feedback(T0 + timedelta(hours=23)) == []  # within the hold
    changed = scoring.sweep_feedback(T0 + timedelta(days=2))
    assert sorted(c.item_id for c in changed) == ["E-1", "GHOST-1"]
    assert scoring.unjoined == {"item_never_seen": 1, "never_delivered": 1}
    assert scoring.feedback_waiting() == {}
    # Dropped from the log too: a re-fold of the saved clock does not bring it back.
    saved = scoring.items["E-1"].to_bytes()
    assert b"fb-E-1-1" not in saved


def test_replay_counts_feedback_still_waiting_and_dropped():
    config = ScoringConfig(
        ClockConfig.from_policies(load_policies(POLICIES)), feedback_hold_seconds=3600
    )
    lines = [
        orjson.dumps(feedback("GHOST-2", T0, 1)),
        orjson.dumps(opened()),
        orjson.dumps(feedback("E-1", T0 + timedelta(hours=3), 2)),
    ]
    result = replay(lines, config)
    # GHOST-2's feedback waited 3 h of event time, past the hour: dropped; E-1's just came.
    assert result.scoring.unjoined == {"item_never_seen": 1}
    assert result.scoring.feedback_waiting() == {"never_delivered": 1}


def test_a_restored_clock_does_not_count_its_earlier_events_again(config: ScoringConfig):
    from gapwatch.core.clock import ItemClock

    first = Scoring(config)
    first.process(validate_event(opened()))
    first.process(validate_event(replied(T0 - timedelta(seconds=1))))
    assert first.before_opened == 1
    saved = first.items["E-1"].to_bytes()
    restored = Scoring(config)
    restored.adopt(ItemClock.restore("E-1", config.clock, saved, []))
    later = replied(T0 + timedelta(hours=2))
    later["id"] = "reply-E-later"
    restored.process(validate_event(later))
    assert restored.before_opened == 0

"""The scoring engine and replay: timers fire for idle items, late events, determinism."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from gapwatch.config import ConfigFileError, load_policies
from gapwatch.core.clock import ClockConfig
from gapwatch.core.examples import EXAMPLES
from gapwatch.core.gaps import Outcome
from gapwatch.core.promises import PromiseKind
from gapwatch.core.scoring import LateEvent, Scoring, ScoringConfig, replay
from gapwatch.core.validation import validate_event
from gapwatch.simulation import Scenario, Simulator

POLICIES = Path(__file__).resolve().parents[2] / "deploy" / "config" / "policies.yaml"
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def config() -> ScoringConfig:
    return ScoringConfig(ClockConfig.from_policies(load_policies(POLICIES)), grace_seconds=600)


def ticket_doc(item: str, at: datetime, priority: str = "P1", event_id: str | None = None) -> Any:
    doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    doc.update(id=event_id or f"open-{item}", subject=item)
    doc["data"].update(ticket_id=item, opened_at=at.isoformat(), priority=priority, promises=[])
    doc["data"].pop("sla_policy")
    return doc


def ticket(item: str, at: datetime, priority: str = "P1", event_id: str | None = None) -> Any:
    return validate_event(ticket_doc(item, at, priority, event_id))


def reply_doc(item: str, at: datetime, event_id: str) -> Any:
    doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.replied.v1"])
    doc.update(id=event_id, subject=item)
    doc["data"].update(ticket_id=item, replied_at=at.isoformat())
    return doc


def reply(item: str, at: datetime, event_id: str) -> Any:
    return validate_event(reply_doc(item, at, event_id))


def test_a_delivery_at_the_due_instant_after_another_items_event_there_is_met(
    config: ScoringConfig,
):
    """Issue 20: another item's event at T-1's due time moved the stream there first, and T-1
    was breached, then corrected by `met`. Events at one instant apply before timers fire."""
    due = T0 + timedelta(minutes=15)  # P1: first response within 15 minutes, 24x7
    lines = [
        orjson.dumps(ticket_doc("T-1", T0)),
        orjson.dumps(ticket_doc("T-2", due)),
        orjson.dumps(reply_doc("T-1", due, "reply-1")),
    ]
    result = replay(lines, config)
    first = [
        (e.subject, e.data.outcome)
        for e in result.gap_events
        if e.subject == "T-1" and e.data.promise_kind is PromiseKind.FIRST_RESPONSE
    ]
    assert first[-1] == ("T-1", Outcome.MET)
    assert ("T-1", Outcome.BREACHED) not in first


def test_idle_item_breaches_when_time_passes(config: ScoringConfig):
    scoring = Scoring(config)
    scoring.process(ticket("T-1", T0))  # P1: first response within 15 minutes, 24x7
    early = scoring.tick(T0 + timedelta(minutes=14))
    assert [
        (e.data.outcome, e.data.at_risk_fraction)
        for e in early
        if e.data.promise_kind is PromiseKind.FIRST_RESPONSE
    ] == [(Outcome.AT_RISK, 0.75), (Outcome.AT_RISK, 0.9)]
    assert not [
        e for e in scoring.tick(T0 + timedelta(minutes=15)) if e.data.outcome is Outcome.BREACHED
    ]  # at the due instant itself a delivery may still come: breached once it has passed
    out = scoring.tick(T0 + timedelta(minutes=15, microseconds=1))
    breaches = [e for e in out if e.data.outcome is Outcome.BREACHED]
    assert [(e.subject, e.data.promise_kind) for e in breaches] == [
        ("T-1", PromiseKind.FIRST_RESPONSE)
    ]
    assert breaches[0].data.outcome_at == T0 + timedelta(minutes=15)
    later = scoring.tick(T0 + timedelta(hours=1))
    assert all(e.data.promise_kind is not PromiseKind.FIRST_RESPONSE for e in later)
    counts = scoring.open_counts()
    overdue = sum(
        c.overdue for (_, kind), c in counts.items() if kind is PromiseKind.FIRST_RESPONSE
    )
    assert overdue == 1


def test_open_counts_in_steps_pause_every_step_and_survive_items_added_meanwhile(
    config: ScoringConfig,
):
    scoring = Scoring(config)
    for n in range(7):
        scoring.process(ticket(f"T-{n}", T0 + timedelta(minutes=n)))
    want = scoring.open_counts()
    counts: dict[Any, Any] = {}
    steps = scoring.count_open(counts, step=3)
    next(steps)  # paused after the first 3 items
    scoring.process(ticket("T-new", T0 + timedelta(minutes=8)))  # a batch runs meanwhile
    assert sum(1 for _ in steps) == 2  # 7 items in steps of 3: two more pauses
    assert counts == want  # the item added meanwhile waits for the next count
    assert scoring.open_counts() != want


def test_events_beyond_the_grace_period_are_refused(config: ScoringConfig):
    scoring = Scoring(config)
    scoring.process(ticket("T-1", T0 + timedelta(hours=1)))
    scoring.process(ticket("T-2", T0 + timedelta(minutes=51)))  # 9 minutes late: within grace
    with pytest.raises(LateEvent, match="grace period is 600s"):
        scoring.process(ticket("T-3", T0 + timedelta(minutes=49)))


def test_windows_count_what_the_clocks_emit(config: ScoringConfig):
    scoring = Scoring(config)
    for i in range(4):
        scoring.process(ticket(f"T-{i}", T0))
    scoring.process(reply("T-0", T0 + timedelta(minutes=5), "r0"))
    scoring.process(reply("T-1", T0 + timedelta(minutes=6), "r1"))
    scoring.tick(T0 + timedelta(minutes=30))
    snap = scoring.snapshot(T0 + timedelta(minutes=30))
    first = [
        w for w in snap.windows if w.promise_kind is PromiseKind.FIRST_RESPONSE and w.window == "1h"
    ]
    assert sum(w.met for w in first) == 2 and sum(w.breached for w in first) == 2
    assert {b for w in first for b in w.latest_breached} == {"T-2", "T-3"}


def simulated_lines(minutes: float, seed: int = 3) -> list[bytes]:
    sim = Simulator(
        start=T0,
        items_per_second=0.5,
        scenario=Scenario.named("team-slip", slip_start_minutes=30, slip_end_minutes=90),
        seed=seed,
    )
    return [orjson.dumps(e) for e in sim.events_until(T0 + timedelta(minutes=minutes))]


def test_replay_is_deterministic_and_ids_are_unique(config: ScoringConfig):
    lines = simulated_lines(180)
    first = replay(lines, config)
    second = replay(lines, config)
    ids = [e.id for e in first.gap_events]
    assert ids == [e.id for e in second.gap_events]
    assert len(ids) == len(set(ids)) > 100
    assert first.rejected == []
    outcomes = {e.data.outcome for e in first.gap_events}
    assert {Outcome.MET, Outcome.BREACHED, Outcome.AT_RISK, Outcome.FEEDBACK} <= outcomes


def test_team_slip_shows_in_the_slipping_team_only(config: ScoringConfig):
    result = replay(simulated_lines(180), config)
    late = {}
    for event in result.gap_events:
        data = event.data
        if data.promise_kind is PromiseKind.FIRST_RESPONSE and data.outcome is Outcome.BREACHED:
            late[data.segment["team"]] = late.get(data.segment["team"], 0) + 1
    assert late.get("billing", 0) > 3 * max(late.get("network", 0), late.get("onboarding", 0), 1)


def test_replay_reports_bad_lines_and_goes_on(config: ScoringConfig):
    lines = simulated_lines(20)
    lines[3:3] = [b"{nope", orjson.dumps({"type": "gapwatch.ticket.opened.v9"})]
    result = replay(lines, config)
    assert [(n, r) for n, r, _ in result.rejected] == [
        (4, "malformed_json"),
        (5, "unsupported_version"),
    ]
    assert len(result.gap_events) > 0


def test_bad_policy_file_names_the_field(tmp_path: Path):
    bad = tmp_path / "p.yaml"
    bad.write_text("version: 1\npolicies:\n  - {name: a, promises: {resolution: {within: soon}}}\n")
    with pytest.raises(ConfigFileError, match=r"policies\[0\][^.]*\.promises\.resolution\.within"):
        load_policies(bad)
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_policies(tmp_path / "missing.yaml")


@pytest.mark.parametrize("load", ["from_bytes", "restore"])
def test_restored_state_ahead_of_the_resume_point_breaches_nothing_early(
    config: ScoringConfig, load: str
):
    # The store saves clocks before the offsets commit, so after a crash a worker can restore
    # T-2 with an event it is about to read again, 40 minutes after T-1's. Re-reading from
    # T-1's events must not fire T-1's timers at T-2's time (a breach, then a correction).
    from gapwatch.core.clock import ItemClock

    events = [
        ticket("T-1", T0),
        reply("T-1", T0 + timedelta(minutes=10), "reply-1"),
        ticket("T-2", T0 + timedelta(minutes=40)),
    ]
    reference = Scoring(config, track_windows=False)
    want = [g.model_dump() for e in events for g in reference.process_and_tick(e)]
    assert ("T-1", Outcome.MET) in {(g["subject"], g["data"]["outcome"]) for g in want}

    restarted = Scoring(config, track_windows=False)
    saved = reference.items["T-2"].to_bytes()
    restarted.adopt(getattr(ItemClock, load)("T-2", config.clock, saved))
    folded = Scoring(config, track_windows=False)
    folded.adopt(ItemClock.from_bytes("T-2", config.clock, saved))
    assert restarted.open_counts() == folded.open_counts() != {}
    stream = events[0].stream
    assert not restarted.caught_up(stream) and stream not in restarted.stream_watermarks
    got = [g.model_dump() for e in events for g in restarted.process_and_tick(e)]
    assert got == want
    assert restarted.caught_up(stream)


def test_a_resting_restore_of_a_whole_stream_then_goes_on_like_the_original(
    config: ScoringConfig,
):
    """Restart in the middle of a simulated stream (tickets, jobs, feedback; some items closed,
    paused, breached): restoring every saved clock resting, in bulk (`adopt_many`) and one by
    one (`adopt`), gives the original's open counts at once, and the rest of the stream then
    yields exactly the original's gap events, with every timer firing on time."""
    from gapwatch.core.clock import ItemClock
    from gapwatch.core.validation import decode_event

    events = [decode_event(line) for line in simulated_lines(120, seed=11)]
    half = len(events) // 2
    original = Scoring(config, track_windows=False)
    for ev in events[:half]:
        original.process_and_tick(ev)
    saved = {item: clock.to_bytes() for item, clock in original.items.items()}
    assert len(saved) > 100

    bulk = Scoring(config, track_windows=False)
    assert bulk.adopt_many(ItemClock.restore(i, config.clock, b) for i, b in saved.items()) == len(
        saved
    )
    # A second, small bulk into the large heap takes the push path: the items due first.
    late = Scoring(config, track_windows=False)
    far = datetime.max.replace(tzinfo=UTC)
    soonest = sorted(saved, key=lambda i: original.items[i].next_deadline() or far)[:3]
    late.adopt_many(
        ItemClock.restore(i, config.clock, b) for i, b in saved.items() if i not in soonest
    )
    late.adopt_many(ItemClock.restore(i, config.clock, saved[i]) for i in soonest)
    single = Scoring(config, track_windows=False)
    folded = Scoring(config, track_windows=False)
    for item, raw in saved.items():
        single.adopt(ItemClock.restore(item, config.clock, raw))
        folded.adopt(ItemClock.from_bytes(item, config.clock, raw))

    want_counts = original.open_counts()
    assert want_counts
    for restored in (bulk, late, single):
        assert all(clock.resting for clock in restored.items.values())
        assert restored.open_counts() == want_counts
        assert restored.restored_watermarks == folded.restored_watermarks
        assert restored._scheduled == folded._scheduled
        # The restored scorer re-reads the second half only (its offsets were committed).
        for ev in events[:half]:
            restored.stream_watermarks[ev.stream] = max(
                ev.data.occurred_at, restored.stream_watermarks.get(ev.stream, ev.data.occurred_at)
            )
    end = events[-1].data.occurred_at + timedelta(days=3)
    want = [g.id for ev in events[half:] for g in original.process_and_tick(ev)]
    want += [g.id for g in original.tick(end)]
    assert len(want) > 100
    for restored in (bulk, late, single):
        got = [g.id for ev in events[half:] for g in restored.process_and_tick(ev)]
        got += [g.id for g in restored.tick(end)]
        assert got == want
        assert restored.open_counts() == original.open_counts()


def test_an_unreadable_restored_clock_blames_neither_its_timer_nor_other_items(
    config: ScoringConfig,
):
    """A restored clock whose saved log this version cannot read is found when first used.
    Its own event is refused (SavedStateError: a `state_unreadable` dead letter); when a later
    event's time reaches its deadline, that event is scored as usual and the unreadable clock is
    reported in `unreadable` (once: its timers stop), instead of the event taking the error."""
    from gapwatch.core.clock import ItemClock, SavedStateError

    reference = Scoring(config, track_windows=False)
    reference.process_and_tick(ticket("T-1", T0))
    saved = reference.items["T-1"].to_bytes().replace(b'"log":[', b'"log":[[1],', 1)
    restarted = Scoring(config, track_windows=False)
    restarted.adopt(ItemClock.restore("T-1", config.clock, saved))
    assert restarted.items["T-1"].resting
    with pytest.raises(SavedStateError, match="T-1"):
        restarted.process_and_tick(reply("T-1", T0 + timedelta(minutes=5), "reply-1"))
    # T-2 opens after T-1's first-response deadline: its event is scored, T-1 is reported.
    later = T0 + timedelta(days=3)
    other = restarted.process_and_tick(ticket("T-2", later))
    assert "T-2" in restarted.items and restarted.items["T-2"].open_promises
    assert {g.subject for g in other} <= {"T-2"}
    assert [e.item_id for e in restarted.unreadable] == ["T-1"]
    restarted.process_and_tick(ticket("T-3", later + timedelta(days=3)))
    assert [e.item_id for e in restarted.unreadable] == ["T-1"]


@pytest.mark.parametrize("load", ["from_bytes", "restore"])
def test_a_clock_adopted_after_its_stream_passed_its_deadlines_fires_them_on_fire_passed(
    config: ScoringConfig, load: str
):
    # A restarted worker can read events before its restore reaches an item: T-1's re-read
    # time passes T-2's first-response deadline while T-2 is not yet adopted, and no later
    # event may come. Once adopted, `fire_passed` gives what the original fired for T-2.
    from gapwatch.core.clock import ItemClock

    opened = ticket("T-2", T0)
    later = ticket("T-1", T0 + timedelta(minutes=20))
    reference = Scoring(config, track_windows=False)
    reference.process_and_tick(opened)
    saved = reference.items["T-2"].to_bytes()
    want = [g.model_dump() for g in reference.process_and_tick(later) if g.subject == "T-2"]
    assert {g["data"]["outcome"] for g in want} == {Outcome.AT_RISK, Outcome.BREACHED}

    restarted = Scoring(config, track_windows=False)
    assert [g for g in restarted.process_and_tick(later) if g.subject == "T-2"] == []
    restarted.adopt(getattr(ItemClock, load)("T-2", config.clock, saved))
    assert [g.model_dump() for g in restarted.fire_passed()] == want
    assert restarted.fire_passed() == []  # fired once

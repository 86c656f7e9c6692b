"""Promise clocks: hand-computed scenarios and properties over event orders and pauses."""

from __future__ import annotations

import copy
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gapwatch.core.catalog import AnyInputEvent
from gapwatch.core.clock import ClockConfig, ItemClock, ItemLogFull, SavedStateError, Status
from gapwatch.core.examples import EXAMPLES
from gapwatch.core.gaps import ArrivalOutcome, GapEvent, Outcome
from gapwatch.core.policies import PolicySet
from gapwatch.core.promises import PromiseKind
from gapwatch.core.validation import validate_event

POLICIES = """
version: 7
defaults:
  calendar: 24x7
  pause_statuses: [awaiting_customer]
  at_risk: [0.5, 0.75]
calendars:
  - name: office
    version: 3
    timezone: Europe/Amsterdam
    hours: {mon: [["09:00", "17:00"]], tue: [["09:00", "17:00"]], wed: [["09:00", "17:00"]],
            thu: [["09:00", "17:00"]], fri: [["09:00", "17:00"]]}
policies:
  - name: office-hours
    match: {team: office}
    calendar: office
    promises:
      first_response: {within: 2h}
      resolution: {within: 1d}
  - name: round-the-clock
    promises:
      first_response: {within: 1h}
      next_response: {within: 30m}
      resolution: {within: 8h}
      completion: {within: 4h}
"""
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # Monday 09:00 in Amsterdam
FR, NR, RES = PromiseKind.FIRST_RESPONSE, PromiseKind.NEXT_RESPONSE, PromiseKind.RESOLUTION


@pytest.fixture(scope="module")
def config() -> ClockConfig:
    return ClockConfig.from_policies(PolicySet.model_validate(yaml.safe_load(POLICIES)))


_counter = iter(range(10**9))


def event(event_type: str, at: datetime, item: str = "T-1", **data: Any) -> AnyInputEvent:
    doc = copy.deepcopy(EXAMPLES[f"gapwatch.{event_type}.v1"])
    doc["id"] = data.pop("id", f"e{next(_counter)}")
    doc["subject"] = item
    body = doc["data"]
    time_field = next(k for k in body if k.endswith("_at") and k != "promised_completion_at")
    if event_type == "job.scheduled":
        time_field = "created_at"
    body[time_field] = at.isoformat()
    for key in ("ticket_id", "job_id", "item_id"):
        if key in body:
            body[key] = item
    body.update(data)
    return validate_event(doc)


def opened(at: datetime = T0, team: str = "support", **data: Any) -> AnyInputEvent:
    data.setdefault("promises", [])
    data.setdefault("sla_policy", None)
    return event("ticket.opened", at, team=team, customer_tier="standard", **data)


def outcomes(events: list[GapEvent]) -> list[tuple[str, str]]:
    return [(e.data.outcome.value, e.data.promise_kind.value) for e in events]


def test_reply_before_due_is_met_with_negative_gap(config: ClockConfig):
    clock = ItemClock("T-1", config)
    assert clock.apply(opened()) == []
    out = clock.apply(event("ticket.replied", T0 + timedelta(minutes=20), author="agent"))
    assert outcomes(out) == [("met", "first_response")]
    gap = out[0].data
    assert gap.gap_seconds == -40 * 60 and gap.gap_business_seconds == -40 * 60
    assert gap.promised_seconds == 3600 and gap.delivered_seconds == 1200
    assert gap.policy is not None and (gap.policy.name, gap.policy.version) == (
        "round-the-clock",
        7,
    )
    assert gap.segment["team"] == "support" and gap.segment["priority"] == "P2"
    assert gap.caused_by == out[0].data.caused_by != ""


def test_breach_fires_at_the_due_time_once_then_late_delivery(config: ClockConfig):
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    assert outcomes(clock.advance(T0 + timedelta(minutes=29))) == []
    # A timer fires once time has passed it (at its instant, events apply first), and its
    # outcome carries its own time.
    assert outcomes(clock.advance(T0 + timedelta(minutes=30))) == []
    at_half = clock.advance(T0 + timedelta(minutes=30, microseconds=1))
    assert outcomes(at_half) == [("at_risk", "first_response")]
    assert at_half[0].data.outcome_at == T0 + timedelta(minutes=30)
    assert at_half[0].data.at_risk_fraction == 0.5
    out = clock.advance(T0 + timedelta(hours=2))
    assert outcomes(out) == [("at_risk", "first_response"), ("breached", "first_response")]
    breach = out[1].data
    assert breach.outcome_at == T0 + timedelta(hours=1) and breach.delivered_at is None
    assert clock.advance(T0 + timedelta(hours=3)) == []
    late = clock.apply(event("ticket.replied", T0 + timedelta(hours=3), author="agent"))
    assert outcomes(late) == [("delivered_late", "first_response")]
    assert late[0].data.gap_seconds == 2 * 3600


def test_a_delivery_exactly_at_the_due_time_is_met_with_no_breach_first(config: ClockConfig):
    """Issue 20: the gap stream showed `breached` at the due time, then a correcting `met`."""
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    assert outcomes(clock.advance(T0 + timedelta(hours=1))) == [
        ("at_risk", "first_response"),
        ("at_risk", "first_response"),
    ]
    out = clock.apply(event("ticket.replied", T0 + timedelta(hours=1), author="agent"))
    assert outcomes(out) == [("met", "first_response")]
    assert out[0].data.gap_seconds == 0 and out[0].data.corrects is None


def test_an_event_after_the_due_time_breaches_first(config: ClockConfig):
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    out = clock.apply(event("ticket.replied", T0 + timedelta(hours=2), author="agent"))
    assert outcomes(out) == [
        ("at_risk", "first_response"),
        ("at_risk", "first_response"),
        ("breached", "first_response"),
        ("delivered_late", "first_response"),
    ]
    assert out[2].data.outcome_at == T0 + timedelta(hours=1)


def test_internal_notes_and_customer_replies_do_not_count(config: ClockConfig):
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    note = event("ticket.replied", T0 + timedelta(minutes=5), author="agent", visibility="internal")
    assert clock.apply(note) == []
    assert clock.apply(event("ticket.replied", T0 + timedelta(minutes=6), author="customer")) == []
    assert {p.kind for p in clock.open_promises} == {FR, RES}


def test_customer_reply_after_first_response_starts_next_response(config: ClockConfig):
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    clock.apply(event("ticket.replied", T0 + timedelta(minutes=10), author="agent"))
    clock.apply(event("ticket.replied", T0 + timedelta(minutes=20), author="customer"))
    nxt = [p for p in clock.open_promises if p.kind is NR]
    assert len(nxt) == 1 and nxt[0].due_at == T0 + timedelta(minutes=50)
    out = clock.apply(event("ticket.replied", T0 + timedelta(minutes=30), author="agent"))
    assert outcomes(out) == [("met", "next_response")]
    clock.apply(event("ticket.replied", T0 + timedelta(minutes=40), author="customer"))
    second = [p for p in clock.open_promises if p.kind is NR]
    assert second[0].round == 1
    out = clock.advance(T0 + timedelta(hours=2))
    assert ("breached", "next_response") in outcomes(out)
    assert len({e.id for e in out}) == len(out)


def test_pause_stops_the_clock_and_moves_the_due_time(config: ClockConfig):
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    clock.apply(event("ticket.replied", T0 + timedelta(minutes=5), author="agent"))
    clock.apply(event("ticket.status_changed", T0 + timedelta(hours=1), status="awaiting_customer"))
    assert clock.paused
    # Resolution was due at T0+8h; nothing fires while paused, even long after.
    assert outcomes(clock.advance(T0 + timedelta(hours=20))) == []
    clock.apply(event("ticket.status_changed", T0 + timedelta(hours=21), status="open"))
    resolution = next(p for p in clock.open_promises if p.kind is RES)
    assert resolution.due_at == T0 + timedelta(hours=28)
    out = clock.apply(event("ticket.resolved", T0 + timedelta(hours=27)))
    assert outcomes(out)[-1] == ("met", "resolution")
    assert out[-1].data.gap_seconds == -3600 and out[-1].data.drift_seconds == 0


def test_delivery_while_paused_counts_the_pause_so_far(config: ClockConfig):
    # Resolved straight from "awaiting customer": the 19 h paused do not count against the
    # 8 h resolution promise, exactly as if the ticket had been resumed first.
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    clock.apply(event("ticket.replied", T0 + timedelta(minutes=5), author="agent"))
    clock.apply(event("ticket.status_changed", T0 + timedelta(hours=1), status="awaiting_customer"))
    out = clock.apply(event("ticket.resolved", T0 + timedelta(hours=20)))
    assert outcomes(out)[-1] == ("met", "resolution")
    # due T0+8h stretched by the 19 h paused = T0+27h; delivered at T0+20h: 7 h early
    assert out[-1].data.gap_seconds == -7 * 3600 and out[-1].data.drift_seconds == 0


def test_opened_outside_business_hours_starts_at_the_next_business_minute(config: ClockConfig):
    clock = ItemClock("T-1", config)
    saturday = datetime(2026, 3, 7, 10, 0, tzinfo=UTC)
    clock.apply(opened(at=saturday, team="office"))
    first = next(p for p in clock.open_promises if p.kind is FR)
    monday_open = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
    assert first.started_at == monday_open
    assert first.due_at == monday_open + timedelta(hours=2)
    resolution = next(p for p in clock.open_promises if p.kind is RES)
    assert resolution.due_at == datetime(2026, 3, 10, 8, 0, tzinfo=UTC)  # one business day


def test_business_gap_excludes_closed_hours(config: ClockConfig):
    clock = ItemClock("T-1", config)
    clock.apply(opened(team="office", at=datetime(2026, 3, 2, 14, 0, tzinfo=UTC)))  # 15:00 local
    # Due 17:00 local (16:00 UTC); answered Tuesday 10:00 local: 1 business hour late.
    out = clock.apply(
        event("ticket.replied", datetime(2026, 3, 3, 9, 0, tzinfo=UTC), author="agent")
    )
    late = out[-1].data
    assert late.outcome is Outcome.DELIVERED_LATE
    assert late.gap_seconds == 17 * 3600 and late.gap_business_seconds == 3600
    assert late.calendar is not None and (late.calendar.name, late.calendar.version) == (
        "office",
        3,
    )


def test_repromise_keeps_the_original_and_reports_drift(config: ClockConfig):
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    new_due = T0 + timedelta(hours=12)
    clock.apply(
        event(
            "ticket.promise_changed",
            T0 + timedelta(hours=1),
            kind="resolution",
            due_at=new_due.isoformat(),
            reason="customer_request",
        )
    )
    out = clock.apply(event("ticket.resolved", T0 + timedelta(hours=10)))
    met = next(
        e.data for e in out if e.data.promise_kind is RES and e.data.outcome is not Outcome.AT_RISK
    )
    assert met.outcome is Outcome.MET and met.promised_at == new_due
    assert met.original_promised_at == T0 + timedelta(hours=8)
    assert met.drift_seconds == 4 * 3600


def test_reopen_starts_a_new_resolution_cycle(config: ClockConfig):
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    first = clock.apply(event("ticket.resolved", T0 + timedelta(minutes=30)))
    clock.apply(event("ticket.reopened", T0 + timedelta(hours=2)))
    second = clock.apply(event("ticket.resolved", T0 + timedelta(hours=3)))
    res1 = next(e for e in first if e.data.promise_kind is RES)
    res2 = next(e for e in second if e.data.promise_kind is RES)
    assert (res1.data.cycle, res2.data.cycle) == (0, 1)
    assert res1.id != res2.id and res2.data.started_at == T0 + timedelta(hours=2)


def test_closing_cancels_what_is_still_open(config: ClockConfig):
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    out = clock.apply(event("ticket.closed", T0 + timedelta(minutes=10)))
    assert sorted(outcomes(out)) == [("cancelled", "first_response"), ("cancelled", "resolution")]
    assert clock.next_deadline() is None and clock.closed


def test_explicit_promises_on_the_ticket(config: ClockConfig):
    clock = ItemClock("T-1", config)
    due = T0 + timedelta(minutes=15)
    clock.apply(opened(promises=[{"kind": "first_response", "due_at": due.isoformat()}]))
    first = next(p for p in clock.open_promises if p.kind is FR)
    assert first.due_at == due and not first.pausable
    out = clock.advance(T0 + timedelta(minutes=16))
    assert ("breached", "first_response") in outcomes(out)
    assert out[-1].data.policy is not None and out[-1].data.policy.name == "explicit"


def job(at: datetime, start: datetime, end: datetime, **data: Any) -> AnyInputEvent:
    data.setdefault("promised_completion_at", None)
    return event(
        "job.scheduled",
        at,
        item="J-1",
        window={"start": start.isoformat(), "end": end.isoformat()},
        **data,
    )


@pytest.mark.parametrize(
    ("arrived", "arrival", "gap", "outcome"),
    [
        (timedelta(hours=-1), ArrivalOutcome.EARLY, -3600.0, Outcome.MET),
        (timedelta(0), ArrivalOutcome.ON_TIME, 0.0, Outcome.MET),
        (timedelta(hours=2), ArrivalOutcome.ON_TIME, 0.0, Outcome.MET),
        (timedelta(hours=2, minutes=30), ArrivalOutcome.LATE, 1800.0, Outcome.DELIVERED_LATE),
    ],
)
def test_arrival_window(
    config: ClockConfig, arrived: timedelta, arrival: ArrivalOutcome, gap: float, outcome: Outcome
):
    clock = ItemClock("J-1", config)
    start, end = T0 + timedelta(hours=4), T0 + timedelta(hours=6)
    clock.apply(job(T0, start, end))
    out = clock.apply(event("job.arrived", start + arrived, item="J-1"))
    delivered = [e.data for e in out if e.data.promise_kind is PromiseKind.ARRIVAL][-1]
    assert (delivered.arrival, delivered.gap_seconds, delivered.outcome) == (arrival, gap, outcome)
    assert delivered.window_start == start and delivered.promised_at == end


def test_job_completion_and_cancellation(config: ClockConfig):
    clock = ItemClock("J-1", config)
    start, end = T0 + timedelta(hours=1), T0 + timedelta(hours=3)
    clock.apply(job(T0, start, end))
    completion = next(p for p in clock.open_promises if p.kind is PromiseKind.COMPLETION)
    assert completion.due_at == start + timedelta(hours=4)
    out = clock.apply(event("job.completed", T0 + timedelta(hours=2), item="J-1", fixed=True))
    delivered = [o for o in outcomes(out) if o[0] != "at_risk"]
    assert sorted(delivered) == [("met", "arrival"), ("met", "completion")]

    other = ItemClock("J-1", config)
    other.apply(job(T0, start, end))
    out = other.apply(event("job.cancelled", T0 + timedelta(minutes=5), item="J-1"))
    assert sorted(outcomes(out)) == [("cancelled", "arrival"), ("cancelled", "completion")]


def test_rescheduled_window_reports_drift(config: ClockConfig):
    clock = ItemClock("J-1", config)
    start, end = T0 + timedelta(hours=1), T0 + timedelta(hours=3)
    clock.apply(job(T0, start, end))
    clock.apply(
        event(
            "job.rescheduled",
            T0 + timedelta(minutes=30),
            item="J-1",
            reason="internal",
            window={
                "start": (start + timedelta(hours=2)).isoformat(),
                "end": (end + timedelta(hours=2)).isoformat(),
            },
        )
    )
    out = clock.apply(event("job.arrived", end + timedelta(hours=1), item="J-1"))
    arrival = [e.data for e in out if e.data.promise_kind is PromiseKind.ARRIVAL][-1]
    assert arrival.arrival is ArrivalOutcome.ON_TIME and arrival.drift_seconds == 7200


def test_feedback_before_the_item_is_joined_after_delivery(config: ClockConfig):
    clock = ItemClock("T-1", config)
    feedback = event("feedback.submitted", T0 - timedelta(minutes=1), item_kind="ticket", csat=2)
    assert clock.apply(feedback) == []
    clock.apply(opened())
    first = clock.apply(event("ticket.replied", T0 + timedelta(minutes=5), author="agent"))
    assert outcomes(first) == [("met", "first_response")]  # the headline (resolution) is open
    out = clock.apply(event("ticket.resolved", T0 + timedelta(hours=9)))
    joined = [e.data for e in out if e.data.outcome is Outcome.FEEDBACK]
    assert len(joined) == 1
    assert joined[0].feedback is not None and joined[0].feedback.csat == 2
    assert joined[0].gap_seconds == 3600 and joined[0].promise_kind is RES
    assert joined[0].feedback.servqual_gap["reliability"] == -3.0


def test_feedback_after_delivery_is_joined_at_once(config: ClockConfig):
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    clock.apply(event("ticket.resolved", T0 + timedelta(hours=1)))
    out = clock.apply(event("feedback.submitted", T0 + timedelta(days=5), item_kind="ticket"))
    assert outcomes(out) == [("feedback", "resolution")]
    assert out[0].data.gap_seconds == -7 * 3600


def test_feedback_read_ahead_of_the_item_breaches_nothing(config: ClockConfig):
    # A consumer of several topics can read an item's feedback (hours later) before its reply:
    # feedback moves no clock, so the result is the one of reading everything in time order.
    events = [
        opened(id="open"),
        event("ticket.replied", T0 + timedelta(minutes=20), author="agent", id="reply"),
        event("ticket.resolved", T0 + timedelta(hours=1), id="resolve"),
        event("feedback.submitted", T0 + timedelta(hours=5), item_kind="ticket", id="fb"),
    ]
    in_order = ItemClock("T-1", config)
    want = [e for ev in events for e in in_order.apply(ev)]
    ahead = ItemClock("T-1", config)
    got = [e for ev in [events[0], events[3], events[1], events[2]] for e in ahead.apply(ev)]
    assert sorted(e.model_dump_json() for e in got) == sorted(e.model_dump_json() for e in want)
    assert not [e for e in got if e.data.outcome in (Outcome.AT_RISK, Outcome.BREACHED)]


def test_repeated_event_id_is_ignored(config: ClockConfig):
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    reply = event("ticket.replied", T0 + timedelta(minutes=5), author="agent", id="dup")
    assert len(clock.apply(reply)) == 1
    assert clock.apply(reply) == []


def test_late_delivery_corrects_a_published_breach(config: ClockConfig):
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    breach = [
        e for e in clock.advance(T0 + timedelta(hours=2)) if e.data.outcome is Outcome.BREACHED
    ]
    late_news = event("ticket.replied", T0 + timedelta(minutes=50), author="agent")
    out = clock.apply(late_news)
    assert outcomes(out) == [("met", "first_response")]
    assert out[0].data.corrects == breach[0].id


def test_log_limit_raises(config: ClockConfig):
    small = ClockConfig(
        config.policies,
        config.calendars,
        config.reply_authors,
        config.reply_visibilities,
        log_limit=3,
    )
    clock = ItemClock("T-1", small)
    clock.apply(opened())
    clock.apply(event("ticket.status_changed", T0 + timedelta(minutes=1), status="a"))
    clock.apply(event("ticket.status_changed", T0 + timedelta(minutes=2), status="b"))
    with pytest.raises(ItemLogFull):
        clock.apply(event("ticket.status_changed", T0 + timedelta(minutes=3), status="c"))


def test_same_input_same_ids(config: ClockConfig):
    events = [
        opened(id="o"),
        event("ticket.replied", T0 + timedelta(hours=2), author="agent", id="r"),
    ]
    runs = []
    for _ in range(2):
        clock = ItemClock("T-1", config)
        runs.append([e.id for ev in events for e in clock.apply(ev)])
    assert runs[0] == runs[1] and len(runs[0]) == 4


# --- properties ---------------------------------------------------------------------------

STEPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "reply_agent",
                "reply_customer",
                "pause",
                "resume",
                "resolve",
                "reopen",
                "note",
                "feedback",
            ]
        ),
        st.integers(min_value=1, max_value=6 * 60),
    ),
    max_size=8,
)


def ticket_story(steps: list[tuple[str, int]], team: str = "support") -> list[AnyInputEvent]:
    events = [opened(team=team, id="open")]
    at = T0
    for index, (step, minutes) in enumerate(steps):
        at += timedelta(minutes=minutes)
        eid = f"s{index}"
        if step == "reply_agent":
            events.append(event("ticket.replied", at, author="agent", id=eid))
        elif step == "reply_customer":
            events.append(event("ticket.replied", at, author="customer", id=eid))
        elif step == "note":
            events.append(
                event("ticket.replied", at, author="agent", visibility="internal", id=eid)
            )
        elif step == "pause":
            events.append(event("ticket.status_changed", at, status="awaiting_customer", id=eid))
        elif step == "resume":
            events.append(event("ticket.status_changed", at, status="open", id=eid))
        elif step == "resolve":
            events.append(event("ticket.resolved", at, id=eid))
        elif step == "feedback":  # held until the item's gap is known, then joined to it
            events.append(event("feedback.submitted", at, item_kind="ticket", csat=3, id=eid))
        else:
            events.append(event("ticket.reopened", at, id=eid))
    return events


def final_state(clock: ItemClock) -> list[tuple[Any, ...]]:
    return sorted(
        (p.kind.value, p.cycle, p.round, p.status.value, p.due_at, p.delivered_at)
        for p in clock.promises
    )


@settings(max_examples=60, deadline=None)
@given(STEPS, st.randoms(use_true_random=False), st.sampled_from(["support", "office"]))
def test_any_order_of_the_same_events_ends_in_the_same_state(
    config: ClockConfig, steps: list[tuple[str, int]], rnd: Any, team: str
):
    events = ticket_story(steps, team)
    end = T0 + timedelta(days=10)
    in_order = ItemClock("T-1", config)
    for ev in events:
        in_order.apply(ev)
    in_order.advance(end)
    shuffled_events = list(events)
    rnd.shuffle(shuffled_events)
    shuffled = ItemClock("T-1", config)
    for ev in shuffled_events:
        shuffled.apply(ev)
    shuffled.advance(end)
    assert final_state(shuffled) == final_state(in_order)


@settings(max_examples=60, deadline=None)
@given(STEPS, st.integers(min_value=1, max_value=48 * 60), st.sampled_from(["support", "office"]))
def test_pausing_never_makes_a_promise_due_earlier(
    config: ClockConfig, steps: list[tuple[str, int]], pause_minutes: int, team: str
):
    events = ticket_story([s for s in steps if s[0] not in ("pause", "resume")], team)
    base = ItemClock("T-1", config)
    for ev in events:
        base.apply(ev)
    paused = ItemClock("T-1", config)
    paused.apply(events[0])
    pause_at = T0 + timedelta(minutes=1)
    paused.apply(event("ticket.status_changed", pause_at, status="awaiting_customer", id="p"))
    paused.apply(
        event(
            "ticket.status_changed",
            pause_at + timedelta(minutes=pause_minutes),
            status="open",
            id="q",
        )
    )
    for ev in events[1:]:
        paused.apply(ev)
    base_due = {(p.kind, p.cycle, p.round): p.due_at for p in base.promises}
    for p in paused.promises:
        key = (p.kind, p.cycle, p.round)
        if key in base_due and p.cycle == 0 and p.round == 0:
            assert p.due_at >= base_due[key]


@settings(max_examples=80, deadline=None)
@given(st.integers(min_value=0, max_value=59 * 60))
def test_delivery_before_the_due_time_is_always_met(config: ClockConfig, seconds: int):
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    out = clock.apply(event("ticket.replied", T0 + timedelta(seconds=seconds), author="agent"))
    assert outcomes(out)[-1] == ("met", "first_response")
    assert out[-1].data.gap_seconds == seconds - 3600


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=72 * 3600))
def test_on_a_24x7_calendar_business_gap_equals_wall_gap(config: ClockConfig, seconds: int):
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    out = clock.apply(event("ticket.replied", T0 + timedelta(seconds=seconds), author="agent"))
    last = out[-1].data
    assert last.gap_business_seconds == pytest.approx(last.gap_seconds)


def test_statuses_cover_every_outcome():
    assert {s.value for s in Status} <= {o.value for o in Outcome} | {"open"}


@settings(max_examples=int(os.environ.get("GAPWATCH_PROPERTY_EXAMPLES", "40")), deadline=None)
@given(STEPS, st.sampled_from(["support", "office"]))
def test_a_saved_clock_resumes_exactly(
    config: ClockConfig, steps: list[tuple[str, int]], team: str
):
    events = ticket_story(steps, team)
    original = ItemClock("T-1", config)
    for ev in events[:-1]:
        original.apply(ev)
    original.advance(T0 + timedelta(hours=3))
    restored = ItemClock.from_bytes("T-1", config, original.to_bytes())
    assert final_state(restored) == final_state(original)
    assert restored.emitted_ids == original.emitted_ids
    assert restored.next_deadline() == original.next_deadline()
    tail_a = [e.id for e in original.apply(events[-1])] + [
        e.id for e in original.advance(T0 + timedelta(days=3))
    ]
    tail_b = [e.id for e in restored.apply(events[-1])] + [
        e.id for e in restored.advance(T0 + timedelta(days=3))
    ]
    assert tail_a == tail_b


def resting_view(clock: ItemClock) -> tuple[Any, ...]:
    """What the scoring engine asks of every item, which a resting clock answers unwoken."""
    return (
        clock.item_kind,
        clock.closed,
        clock.segment,
        clock.last_event_at,
        clock.last_item_event_at,
        clock.next_deadline(),
        sorted((k.value, s) for k, s in clock.open_states()),
    )


@settings(max_examples=int(os.environ.get("GAPWATCH_PROPERTY_EXAMPLES", "40")), deadline=None)
@given(STEPS, st.sampled_from(["support", "office"]), st.integers(0, 5 * 24 * 60))
def test_a_resting_restore_answers_like_the_folded_clock_and_resumes_exactly(
    config: ClockConfig, steps: list[tuple[str, int]], team: str, idle_minutes: int
):
    events = ticket_story(steps, team)
    original = ItemClock("T-1", config)
    for ev in events[:-1]:
        original.apply(ev)
    original.advance(T0 + timedelta(hours=3))
    resting = ItemClock.restore("T-1", config, original.to_bytes())
    assert resting.resting
    assert resting_view(resting) == resting_view(original)
    assert resting.to_bytes() == original.to_bytes()
    # An idle stretch: a resting clock that reaches a deadline wakes and emits what the folded
    # one emits; one that reaches none stays resting and still resumes exactly.
    idle = T0 + timedelta(hours=3, minutes=idle_minutes)
    assert [e.id for e in resting.advance(idle)] == [e.id for e in original.advance(idle)]
    assert resting_view(resting) == resting_view(original)
    tail_a = [e.id for e in original.apply(events[-1])] + [
        e.id for e in original.advance(T0 + timedelta(days=9))
    ]
    tail_b = [e.id for e in resting.apply(events[-1])] + [
        e.id for e in resting.advance(T0 + timedelta(days=9))
    ]
    assert tail_a == tail_b
    assert not resting.resting
    assert final_state(resting) == final_state(original)
    assert resting.to_bytes() == original.to_bytes()


def test_a_resting_clock_with_feedback_waiting_for_its_gap_wakes(config: ClockConfig):
    """Feedback held until its item's gap is known makes the fold read the clock's promises;
    a resting clock waking must answer that from the state being folded (it recursed until the
    stack ran out, and the event that woke it went to the dead-letter topic)."""
    original = ItemClock("T-1", config)
    original.apply(opened())
    feedback = event("feedback.submitted", T0 + timedelta(minutes=20), item_kind="ticket", csat=4)
    assert original.apply(feedback) == []  # held: the first response is still open
    saved = original.to_bytes()
    resting = ItemClock.restore("T-1", config, saved)
    assert resting.resting
    reply = event("ticket.replied", T0 + timedelta(minutes=30))
    assert outcomes(resting.apply(reply)) == outcomes(original.apply(reply))
    assert not resting.resting
    assert resting.to_bytes() == original.to_bytes()
    broken = ItemClock.restore("T-1", config, saved.replace(b'"log":[', b'"log":[[1],'))
    for _ in range(2):  # an unreadable log is refused on every use, not turned into a blank
        with pytest.raises(SavedStateError, match=r"T-1.*values to unpack"):
            broken.apply(event("ticket.replied", T0 + timedelta(minutes=30)))
        assert broken.resting
    with pytest.raises(SavedStateError, match="T-1"):  # a timer wakes it the same way
        broken.advance(T0 + timedelta(days=30))
    assert broken.resting
    with pytest.raises(SavedStateError, match=r"T-1.*values to unpack"):
        ItemClock.from_bytes("T-1", config, broken.to_bytes())


def test_a_restore_under_other_policies_or_from_format_1_folds_at_once(config: ClockConfig):
    """A summary holds due times computed under the policies of its save: under changed
    policies the clock is re-folded at once (the new policy applies as on any re-fold). Format 1
    saves (no summary) still read."""
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    saved = clock.to_bytes()
    changed = ClockConfig.from_policies(
        PolicySet.model_validate({**yaml.safe_load(POLICIES), "version": 99})
    )
    assert changed.fingerprint != config.fingerprint
    refolded = ItemClock.restore("T-1", changed, saved)
    assert not refolded.resting
    assert refolded.promises[0].policy.version == 99
    old = orjson.loads(saved)
    del old["summary"]
    old["format"] = 1
    from_format_1 = ItemClock.restore("T-1", config, orjson.dumps(old))
    assert not from_format_1.resting
    assert resting_view(from_format_1) == resting_view(clock)
    assert from_format_1.to_bytes() == saved
    broken = {**orjson.loads(saved), "summary": [config.fingerprint, "ticket"]}
    with pytest.raises(SavedStateError, match="T-1"):
        ItemClock.restore("T-1", config, orjson.dumps(broken))


def policies_with(version: int, **targets: str) -> ClockConfig:
    """The test policies, with other targets for the round-the-clock policy's promises."""
    doc = yaml.safe_load(POLICIES)
    doc["version"] = version
    doc["policies"][1]["promises"].update({kind: {"within": t} for kind, t in targets.items()})
    return ClockConfig.from_policies(PolicySet.model_validate(doc))


@pytest.mark.parametrize("load", ["restore", "from_bytes"])
def test_a_policy_change_publishes_what_it_implies_for_open_promises(
    config: ClockConfig, load: str
):
    """Restored under a shorter resolution target, an open ticket whose new due time has
    already passed by its saved time is breached now (the re-fold would otherwise move it past
    its due time in silence); what was published before is not published again, and a promise
    that already met its target keeps its outcome."""
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    clock.apply(event("ticket.replied", T0 + timedelta(minutes=30)))  # first response: met
    before = clock.advance(T0 + timedelta(hours=5))  # resolution (8h): 50 % at-risk at 4h
    assert outcomes(before) == [("at_risk", "resolution")]
    saved = clock.to_bytes()
    stricter = policies_with(8, first_response="10m", resolution="4h")
    load_clock = getattr(ItemClock, load)

    unpublished: list[GapEvent] = []
    restored = load_clock("T-1", stricter, saved, unpublished)
    # Resolution is now due at 4h: its 75 % at-risk level (3h) and its breach were never
    # published. The first response met in 30 minutes stays met (no breach at 10 minutes).
    assert outcomes(unpublished) == [("at_risk", "resolution"), ("breached", "resolution")]
    assert [e.data.outcome_at for e in unpublished] == [
        T0 + timedelta(hours=3),
        T0 + timedelta(hours=4),
    ]
    assert all(e.data.policy.version == 8 for e in unpublished)
    assert {e.id for e in unpublished} <= restored.emitted_ids
    assert restored.advance(T0 + timedelta(hours=6)) == []  # published once
    # The same events scored under the stricter policies from the start give these ids.
    fresh = ItemClock("T-1", stricter)
    fresh.apply(opened())
    fresh.apply(event("ticket.replied", T0 + timedelta(minutes=30)))
    fresh_ids = {e.id for e in fresh.advance(T0 + timedelta(hours=5))}
    assert {e.id for e in unpublished} <= fresh_ids

    same: list[GapEvent] = []
    load_clock("T-1", config, saved, same)
    assert same == []  # under the save's own policies everything was published


def test_the_log_keeps_events_encoded_and_saves_read_back_in_either_form(config: ClockConfig):
    """Memory per item: the log holds each event as its saved JSON, not the decoded model, after
    an in-order event, a re-fold (an event out of order) and a restore alike. A value saved as
    decoded JSON (the table's earlier codec) reads back to the same clock."""
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    clock.apply(event("ticket.replied", T0 + timedelta(hours=3)))
    clock.apply(event("ticket.status_changed", T0 + timedelta(hours=1), status="pending"))
    restored = ItemClock.from_bytes("T-1", config, clock.to_bytes())
    for kept in (clock, restored):
        assert len(kept._log) == 3
        assert all(entry.data is None for entry in kept._log)
    assert restored.to_bytes() == clock.to_bytes()
    from_json = ItemClock.from_bytes("T-1", config, orjson.loads(clock.to_bytes()))
    assert from_json.to_bytes() == clock.to_bytes()
    assert final_state(from_json) == final_state(clock)


def test_unreadable_saved_state_is_refused_not_guessed(config: ClockConfig):
    clock = ItemClock("T-1", config)
    clock.apply(opened())
    saved = clock.to_dict()
    assert ItemClock.from_bytes("T-1", config, saved).emitted_ids == clock.emitted_ids
    for bad in (
        {**saved, "format": 99},
        {k: v for k, v in saved.items() if k != "format"},
        b"\x00 not json",
        b"[1, 2]",
    ):
        with pytest.raises(SavedStateError, match="T-1"):
            ItemClock.from_bytes("T-1", config, bad)


def test_the_fingerprint_names_the_holiday_data_when_a_calendar_uses_country_holidays(
    monkeypatch: pytest.MonkeyPatch,
):
    """A newer `holidays` package can close other days: saves computed under the old data must
    be re-folded, not restored resting with due times the new data would not give."""
    import holidays

    plain = yaml.safe_load(POLICIES)
    with_countries = yaml.safe_load(POLICIES)
    with_countries["calendars"][0]["holidays"] = {"countries": [{"country": "NL"}]}

    def fingerprints() -> tuple[str, str]:
        return tuple(  # type: ignore[return-value]
            ClockConfig.from_policies(PolicySet.model_validate(doc)).fingerprint
            for doc in (plain, with_countries)
        )

    before = fingerprints()
    monkeypatch.setattr(holidays, "__version__", "999.0")
    after = fingerprints()
    assert after[0] == before[0]  # no country holidays: the package does not matter
    assert after[1] != before[1]

"""Alert lifecycle: pending, firing and resolved with `for` and `hold`, no data, stable ids."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gapwatch.core.alerts import lifecycle
from gapwatch.core.alerts.lifecycle import (
    Alert,
    AlertState,
    Transition,
    Verdict,
    advance,
    fingerprint,
    transition_id,
)
from gapwatch.core.alerts.rules import Rule, Severity

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LABELS = {"team": "a", "region": "eu"}
INACTIVE, PENDING, FIRING, RESOLVED = (
    AlertState.INACTIVE,
    AlertState.PENDING,
    AlertState.FIRING,
    AlertState.RESOLVED,
)
PAGE, TICKET = Severity.PAGE, Severity.TICKET


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_rule(**changes: Any) -> Rule:
    data: dict[str, Any] = {
        "name": "late",
        "group_by": ["team", "region"],
        "condition": {"type": "overdue", "above": 3},
        "for": "60s",
        "hold": "5m",
        "runbook_url": "https://runbooks.example/late",
        "dashboard_url": "https://dash.example/late",
    }
    data.update(changes)
    return Rule.model_validate(data)


def verdict(firing: bool | None, severity: Severity = PAGE, **changes: Any) -> Verdict:
    fields: dict[str, Any] = {
        "summary": f"late: {firing}",
        "figures": {} if firing is None else {"overdue": 4 if firing else 0, "above": 3},
        "window": "now",
    }
    fields.update(changes)
    return Verdict(firing, severity, **fields)


class Run:
    """Feeds verdicts to one alert and keeps every transition."""

    def __init__(self, rule: Rule, alert: Alert | None = None) -> None:
        self.rule = rule
        self.alert = alert or Alert.new(rule.name, LABELS)
        self.transitions: list[Transition] = []

    def step(self, seconds: float, v: Verdict) -> list[Transition]:
        self.alert, moved = advance(self.alert, v, at(seconds), self.rule)
        self.transitions.extend(moved)
        return moved


def states(moved: list[Transition]) -> list[tuple[AlertState, AlertState]]:
    return [(t.from_state, t.to_state) for t in moved]


# --- identity ------------------------------------------------------------------------------------


def test_fingerprint_is_a_stable_golden_value() -> None:
    canonical = b'{"rule":"late","labels":{"region":"eu","team":"a"}}'
    assert fingerprint("late", LABELS) == hashlib.sha256(canonical).hexdigest()[:32]
    assert fingerprint("late", LABELS) == "3cfd6cab406c94ff737b2e7b05f1e4ce"


def test_fingerprint_ignores_label_order() -> None:
    assert fingerprint("late", {"team": "a", "region": "eu"}) == fingerprint(
        "late", {"region": "eu", "team": "a"}
    )


def test_fingerprint_differs_by_rule_and_by_labels() -> None:
    base = fingerprint("late", LABELS)
    assert fingerprint("late-2", LABELS) != base
    assert fingerprint("late", {"team": "a", "region": "us"}) != base
    assert fingerprint("late", {"team": "a"}) != base
    assert fingerprint("late", {}) != fingerprint("late-2", {})


def test_transition_id_is_a_stable_golden_value() -> None:
    assert transition_id("3cfd6cab406c94ff737b2e7b05f1e4ce", 2) == (
        "17d4ae17-fd85-5406-aaa9-c431211974e0"
    )
    assert transition_id("3cfd6cab406c94ff737b2e7b05f1e4ce", 3) != transition_id(
        "3cfd6cab406c94ff737b2e7b05f1e4ce", 2
    )


def test_new_alert_is_inactive_with_its_fingerprint() -> None:
    alert = Alert.new("late", LABELS)
    assert alert.fingerprint == fingerprint("late", LABELS)
    assert alert.state is INACTIVE
    assert alert.sequence == 0
    assert alert.labels == LABELS


# --- for and hold ------------------------------------------------------------------------------


def test_pending_for_then_firing_then_flap_inside_hold_then_resolved() -> None:
    run = Run(make_rule())  # for 60 s, hold 300 s
    fp = run.alert.fingerprint

    moved = run.step(0, verdict(True))
    assert states(moved) == [(INACTIVE, PENDING)]
    assert moved[0].sequence == 1
    assert moved[0].id == transition_id(fp, 1)
    assert moved[0].notifies is False
    assert run.alert.pending_since == at(0)

    assert run.step(30, verdict(True)) == []
    assert run.alert.state is PENDING

    moved = run.step(60, verdict(True))
    assert states(moved) == [(PENDING, FIRING)]
    assert moved[0].sequence == 2
    assert moved[0].id == lifecycle.transition_id(fp, 2)
    assert moved[0].notifies is True
    assert moved[0].firing_since == at(60)
    assert moved[0].severity is PAGE
    assert moved[0].runbook_url == "https://runbooks.example/late"
    assert moved[0].dashboard_url == "https://dash.example/late?var-region=eu&var-team=a"
    assert moved[0].figures == {"overdue": 4, "above": 3}

    assert run.step(70, verdict(False)) == []
    assert run.alert.state is FIRING
    assert run.alert.clear_since == at(70)

    assert run.step(100, verdict(True)) == []  # flap: nobody is paged again
    assert run.alert.state is FIRING
    assert run.alert.clear_since is None

    assert run.step(110, verdict(False)) == []
    assert run.alert.clear_since == at(110)
    assert run.step(200, verdict(False)) == []
    assert run.step(409, verdict(False)) == []  # clear for 299 s
    assert run.alert.state is FIRING

    moved = run.step(410, verdict(False))  # clear for 300 s
    assert states(moved) == [(FIRING, RESOLVED)]
    assert moved[0].sequence == 3
    assert moved[0].notifies is True
    assert moved[0].firing_since == at(60)
    assert run.alert.resolved_at == at(410)
    assert run.alert.clear_since is None

    assert [t.to_state for t in run.transitions].count(FIRING) == 1
    assert [t.sequence for t in run.transitions] == [1, 2, 3]


def test_for_zero_fires_at_once_with_two_transitions() -> None:
    run = Run(make_rule(**{"for": 0}))
    moved = run.step(0, verdict(True, TICKET))
    assert states(moved) == [(INACTIVE, PENDING), (PENDING, FIRING)]
    assert [t.sequence for t in moved] == [1, 2]
    assert [t.at for t in moved] == [at(0), at(0)]
    assert moved[1].severity is TICKET
    assert run.alert.state is FIRING
    assert run.alert.firing_since == at(0)


def test_pending_then_false_goes_inactive_without_notifying() -> None:
    run = Run(make_rule())
    run.step(0, verdict(True))
    moved = run.step(59, verdict(False))
    assert states(moved) == [(PENDING, INACTIVE)]
    assert moved[0].notifies is False
    assert run.alert.pending_since is None
    assert all(not t.notifies for t in run.transitions)


def test_for_counts_from_the_latest_pending_start() -> None:
    run = Run(make_rule())
    run.step(0, verdict(True))
    run.step(30, verdict(False))
    run.step(40, verdict(True))
    assert run.step(90, verdict(True)) == []  # 50 s since pending again
    assert states(run.step(100, verdict(True))) == [(PENDING, FIRING)]


def test_hold_zero_resolves_on_the_first_clear_evaluation() -> None:
    run = Run(make_rule(**{"for": 0, "hold": 0}))
    run.step(0, verdict(True))
    assert states(run.step(10, verdict(False))) == [(FIRING, RESOLVED)]


def test_resolved_alert_fires_again_with_new_sequence_numbers() -> None:
    run = Run(make_rule(**{"for": 0, "hold": 0}))
    run.step(0, verdict(True))
    run.step(10, verdict(False))
    moved = run.step(20, verdict(True))
    assert states(moved) == [(RESOLVED, PENDING), (PENDING, FIRING)]
    assert [t.sequence for t in moved] == [4, 5]
    assert run.alert.firing_since == at(20)
    assert run.alert.resolved_at is None


def test_false_while_inactive_or_resolved_does_nothing() -> None:
    run = Run(make_rule(**{"for": 0, "hold": 0}))
    assert run.step(0, verdict(False)) == []
    assert run.alert.state is INACTIVE
    run.step(10, verdict(True))
    run.step(20, verdict(False))
    assert run.step(30, verdict(False)) == []
    assert run.alert.state is RESOLVED


# --- severity ----------------------------------------------------------------------------------


def test_escalation_while_firing_notifies_again_deescalation_does_not() -> None:
    run = Run(make_rule(**{"for": 0}))
    run.step(0, verdict(True, TICKET))
    assert run.alert.severity is TICKET

    moved = run.step(10, verdict(True, PAGE))
    assert states(moved) == [(FIRING, FIRING)]
    assert moved[0].severity is PAGE
    assert moved[0].sequence == 3
    assert moved[0].notifies is True
    assert moved[0].firing_since == at(0)  # still the same firing

    assert run.step(20, verdict(True, TICKET)) == []
    assert run.alert.severity is PAGE
    assert run.step(30, verdict(True, PAGE)) == []  # already at page


def test_severity_rises_while_pending_without_a_transition() -> None:
    run = Run(make_rule())
    run.step(0, verdict(True, TICKET))
    assert run.step(30, verdict(True, PAGE)) == []
    assert run.alert.severity is PAGE
    moved = run.step(60, verdict(True, TICKET))
    assert states(moved) == [(PENDING, FIRING)]
    assert moved[0].severity is PAGE


def test_refiring_after_resolve_starts_from_the_verdicts_severity() -> None:
    run = Run(make_rule(**{"for": 0, "hold": 0}))
    run.step(0, verdict(True, PAGE))
    run.step(10, verdict(False))
    moved = run.step(20, verdict(True, TICKET))
    assert moved[-1].severity is TICKET


# --- no data -----------------------------------------------------------------------------------


def firing_alert(rule: Rule) -> Run:
    run = Run(rule)
    run.step(0, verdict(True))
    run.step(60, verdict(True))
    assert run.alert.state is FIRING
    return run


def test_no_data_keep_changes_nothing() -> None:
    run = firing_alert(make_rule(no_data="keep"))
    before = run.alert
    for seconds in (100, 1000, 10000):
        assert run.step(seconds, verdict(None, summary="late: no data", figures={})) == []
    assert run.alert == replace(before, evaluated_at=at(10000))


def test_no_data_keep_leaves_a_running_hold_where_it_was() -> None:
    run = firing_alert(make_rule(no_data="keep"))
    run.step(100, verdict(False))
    run.step(300, verdict(None))
    assert run.alert.clear_since == at(100)
    assert states(run.step(400, verdict(False))) == [(FIRING, RESOLVED)]


def test_no_data_keep_leaves_pending_pending() -> None:
    run = Run(make_rule(no_data="keep"))
    run.step(0, verdict(True))
    assert run.step(30, verdict(None)) == []
    assert run.alert.state is PENDING
    assert states(run.step(60, verdict(True))) == [(PENDING, FIRING)]


def test_no_data_ok_resolves_a_firing_alert_after_hold() -> None:
    run = firing_alert(make_rule(no_data="ok"))
    assert run.step(100, verdict(None, summary="late: no data", figures={})) == []
    assert run.alert.clear_since == at(100)
    assert run.step(399, verdict(None)) == []
    moved = run.step(400, verdict(None, summary="late: no data", figures={}))
    assert states(moved) == [(FIRING, RESOLVED)]
    assert moved[0].summary == "late: no data"
    assert moved[0].figures == {"overdue": 4, "above": 3}  # the last figures with any


def test_no_data_ok_sends_pending_back_to_inactive() -> None:
    run = Run(make_rule(no_data="ok"))
    run.step(0, verdict(True))
    assert states(run.step(30, verdict(None))) == [(PENDING, INACTIVE)]


def test_no_data_fire_fires() -> None:
    run = Run(make_rule(no_data="fire", **{"for": 0}))
    moved = run.step(0, verdict(None, TICKET, summary="late (team=a): no data", figures={}))
    assert states(moved) == [(INACTIVE, PENDING), (PENDING, FIRING)]
    assert moved[1].summary == "late (team=a): no data"
    assert moved[1].severity is TICKET


def test_no_data_fire_honours_for() -> None:
    run = Run(make_rule(no_data="fire"))
    assert states(run.step(0, verdict(None))) == [(INACTIVE, PENDING)]
    assert states(run.step(60, verdict(None))) == [(PENDING, FIRING)]


# --- determinism and the wire form -------------------------------------------------------------


def test_advance_from_the_same_alert_gives_the_same_transitions() -> None:
    rule = make_rule(**{"for": 0})
    prior = Alert.new("late", LABELS)
    first = advance(prior, verdict(True), at(0), rule)
    again = advance(prior, verdict(True), at(0), rule)
    assert first == again
    assert [t.id for t in first[1]] == [t.id for t in again[1]]
    assert len({t.id for t in first[1]}) == 2


def test_replaying_a_whole_history_gives_the_same_ids() -> None:
    script = [(0, True), (30, True), (60, True), (70, False), (100, True), (400, False)]
    script += [(700, False), (800, True), (900, True)]

    def ids() -> list[str]:
        run = Run(make_rule())
        for seconds, firing in script:
            run.step(seconds, verdict(firing))
        return [t.id for t in run.transitions]

    first = ids()
    assert first == ids()
    fp = fingerprint("late", LABELS)
    assert first == [transition_id(fp, n) for n in range(1, len(first) + 1)]


def sample_transitions() -> list[Transition]:
    run = Run(make_rule(**{"for": 0, "hold": 0}))
    run.step(0.25, verdict(True, TICKET, latest_breached=("T-1", "T-2")))
    run.step(5, verdict(True, PAGE))
    run.step(10, verdict(False))
    return run.transitions


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_transition_round_trips_through_its_dict_and_json(index: int) -> None:
    transition = sample_transitions()[index]
    data = transition.as_dict()
    assert Transition.from_dict(data) == transition
    assert Transition.from_dict(orjson.loads(orjson.dumps(data))) == transition


def test_transition_dict_is_plain_json() -> None:
    pending, firing, _, resolved = sample_transitions()
    assert pending.as_dict() == {
        "id": transition_id(fingerprint("late", LABELS), 1),
        "fingerprint": "3cfd6cab406c94ff737b2e7b05f1e4ce",
        "rule": "late",
        "labels": {"team": "a", "region": "eu"},
        "severity": "ticket",
        "from_state": "inactive",
        "to_state": "pending",
        "at": "2026-03-02T12:00:00.250000Z",
        "sequence": 1,
        "summary": "late: True",
        "figures": {"overdue": 4, "above": 3},
        "window": "now",
        "latest_breached": ["T-1", "T-2"],
        "firing_since": None,
        "runbook_url": "https://runbooks.example/late",
        "dashboard_url": "https://dash.example/late?var-region=eu&var-team=a",
    }
    assert firing.as_dict()["firing_since"] == "2026-03-02T12:00:00.250000Z"
    assert resolved.as_dict()["to_state"] == "resolved"
    assert resolved.as_dict()["at"] == "2026-03-02T12:00:10Z"


def test_from_dict_without_urls_defaults_them() -> None:
    data = sample_transitions()[1].as_dict()
    del data["runbook_url"], data["dashboard_url"]
    restored = Transition.from_dict(data)
    assert (restored.runbook_url, restored.dashboard_url) == ("", "")


# --- the laws, for any sequence of verdicts -----------------------------------------------

RULES = {
    (for_, hold, no_data): make_rule(**{"for": for_, "hold": hold, "no_data": no_data})
    for for_ in (0, 60)
    for hold in (0, 300)
    for no_data in ("keep", "ok", "fire")
}
ALLOWED = {
    (INACTIVE, PENDING),
    (RESOLVED, PENDING),
    (PENDING, FIRING),
    (PENDING, INACTIVE),
    (FIRING, FIRING),  # escalation only
    (FIRING, RESOLVED),
}


@given(
    key=st.sampled_from(sorted(RULES)),
    steps=st.lists(
        st.tuples(
            st.sampled_from([True, False, None]),
            st.sampled_from([Severity.INFO, TICKET, PAGE]),
            st.integers(min_value=0, max_value=400),
        ),
        max_size=40,
    ),
)
def test_transitions_follow_the_lifecycle(
    key: tuple[int, int, str], steps: list[tuple[bool | None, Severity, int]]
) -> None:
    rule = RULES[key]
    alert = Alert.new(rule.name, LABELS)
    fp = alert.fingerprint
    now = T0
    state = INACTIVE
    severity: Severity | None = None
    all_moves: list[Transition] = []
    rising_edges = 0
    last_effective = False  # an alert starts as if the condition were false
    pending_start: datetime | None = None
    clear_start: datetime | None = None

    for firing, verdict_severity, step in steps:
        now += timedelta(seconds=step)
        v = verdict(firing, verdict_severity)
        effective = firing
        if firing is None and rule.no_data.value != "keep":
            effective = rule.no_data.value == "fire"
        if effective is True:
            rising_edges += not last_effective
            clear_start = None
        elif effective is False and clear_start is None:
            clear_start = now
        if effective is not None:
            last_effective = effective

        new_alert, moved = advance(alert, v, now, rule)
        assert advance(alert, v, now, rule) == (new_alert, moved)  # deterministic
        assert len(moved) <= 2
        if effective is None:
            assert moved == []
            assert replace(new_alert, evaluated_at=None) == replace(alert, evaluated_at=None)

        for t in moved:
            assert t.from_state is state
            assert (t.from_state, t.to_state) in ALLOWED
            assert t.at == now
            if t.to_state is PENDING:
                pending_start = now
            if (t.from_state, t.to_state) == (PENDING, FIRING):
                assert pending_start is not None
                assert now - pending_start >= timedelta(seconds=rule.for_)
            if (t.from_state, t.to_state) == (FIRING, FIRING):
                assert severity is not None and t.severity.rank > severity.rank
            if t.to_state is RESOLVED:
                assert clear_start is not None
                assert now - clear_start >= timedelta(seconds=rule.hold)
            if t.to_state is FIRING:
                severity = t.severity
            assert t.notifies is (t.to_state in (FIRING, RESOLVED))
            state = t.to_state
        assert new_alert.state is state
        all_moves.extend(moved)
        alert = new_alert

    assert [t.sequence for t in all_moves] == list(range(1, len(all_moves) + 1))
    assert [t.id for t in all_moves] == [transition_id(fp, t.sequence) for t in all_moves]
    assert len({t.id for t in all_moves}) == len(all_moves)
    fired = sum((t.from_state, t.to_state) == (PENDING, FIRING) for t in all_moves)
    assert fired <= rising_edges

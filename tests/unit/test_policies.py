"""SLA policies: parsing, matching, defaults, and due times on business calendars."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from gapwatch.config import load_policies
from gapwatch.core.policies import PolicySet, Target, parse_target
from gapwatch.core.promises import PromiseKind

POLICIES = Path(__file__).resolve().parents[2] / "deploy" / "config" / "policies.yaml"


def load(text: str) -> PolicySet:
    return PolicySet.model_validate(yaml.safe_load(text))


@pytest.fixture(scope="module")
def shipped() -> PolicySet:
    return PolicySet.model_validate(yaml.safe_load(POLICIES.read_text()))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", Target(seconds=90)),
        ("15m", Target(seconds=900)),
        ("4h", Target(seconds=14400)),
        ("1.5h", Target(seconds=5400)),
        ("1d", Target(days=1)),
        (" 3d ", Target(days=3)),
        (600, Target(seconds=600)),
    ],
)
def test_durations(text: Any, expected: Target):
    assert Target.model_validate(parse_target(text)) == expected


@pytest.mark.parametrize("text", ["1.5d", "soon", "4 hours", "-1h", "0m", True])
def test_bad_durations_are_refused(text: Any):
    doc = {"version": 1, "policies": [{"name": "p", "promises": {"resolution": {"within": text}}}]}
    with pytest.raises(ValidationError) as info:
        PolicySet.model_validate(doc)
    assert info.value.errors()[0]["loc"][:4] == ("policies", 0, "promises", "resolution")


def test_shipped_policies_load_and_resolve(shipped: PolicySet):
    assert shipped.version == 1
    assert {c.name for c in shipped.calendars} == {"emea-business", "us-business"}
    critical = shipped.select({"priority": "P1", "customer_tier": "gold"})
    assert critical is not None and critical.name == "critical"
    resolved = {p.kind: p for p in shipped.resolve(critical)}
    assert resolved[PromiseKind.FIRST_RESPONSE].within == Target(seconds=900)
    assert resolved[PromiseKind.RESOLUTION].at_risk == (0.5, 0.75, 0.9)
    assert resolved[PromiseKind.FIRST_RESPONSE].at_risk == (0.75, 0.9)
    assert resolved[PromiseKind.FIRST_RESPONSE].calendar == "24x7"


def test_first_match_wins_and_lists_match_any(shipped: PolicySet):
    gold = shipped.select({"priority": "P3", "customer_tier": "platinum"})
    assert gold is not None and gold.name == "gold-support"
    fallback = shipped.select({"priority": "P3", "customer_tier": "standard"})
    assert fallback is not None and fallback.name == "standard"
    named = shipped.select({"priority": "P1"}, by_name="gold-support")
    assert named is not None and named.name == "gold-support"


def test_no_match_is_none():
    policies = load("""
version: 2
policies:
  - {name: only-p1, match: {priority: P1}, promises: {resolution: {within: 4h}}}
""")
    assert policies.select({"priority": "P2"}) is None
    assert policies.select({}) is None


def test_one_business_day_on_a_calendar_is_not_24_hours(shipped: PolicySet):
    gold = shipped.select({"customer_tier": "gold"})
    assert gold is not None
    resolution = {p.kind: p for p in shipped.resolve(gold)}[PromiseKind.RESOLUTION]
    calendar = shipped.calendar_objects()[resolution.calendar]
    friday_afternoon = datetime(2026, 3, 6, 15, 0, tzinfo=UTC)  # 16:00 in Amsterdam
    due = resolution.within.due(calendar, friday_afternoon)
    assert due == datetime(2026, 3, 9, 15, 0, tzinfo=UTC)  # Monday 16:00, not Saturday


def test_business_hours_target_skips_the_night(shipped: PolicySet):
    standard = shipped.select({})
    assert standard is not None
    first = {p.kind: p for p in shipped.resolve(standard)}[PromiseKind.FIRST_RESPONSE]
    calendar = shipped.calendar_objects()["emea-business"]
    opened = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)  # Tue 16:00 local, 1.5 h before close
    assert first.within.due(calendar, opened) == datetime(2026, 3, 4, 10, 0, tzinfo=UTC)


def test_pause_statuses_default_and_override():
    policies = load("""
version: 1
defaults: {pause_statuses: [waiting]}
policies:
  - {name: a, match: {team: x}, pause_statuses: [], promises: {resolution: {within: 1h}}}
  - {name: b, promises: {resolution: {within: 1h}}}
""")
    assert policies.pause_statuses(policies.select({"team": "x"})) == frozenset()
    assert policies.pause_statuses(policies.select({"team": "y"})) == frozenset({"waiting"})


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (
            "version: 1\npolicies: [{name: a, calendar: mars,"
            " promises: {resolution: {within: 1h}}}]",
            "unknown_calendar",
        ),
        (
            "version: 1\npolicies: [{name: a, promises: {resolution: {within: 1h, calendar: x}}}]",
            "unknown_calendar",
        ),
        (
            "version: 1\npolicies: [{name: a, promises: {resolution: {within: 1h}}},"
            " {name: a, promises: {resolution: {within: 2h}}}]",
            "duplicate_policy",
        ),
        ("version: 1\npolicies: [{name: a, promises: {eventually: {within: 1h}}}]", "enum"),
        (
            "version: 1\npolicies: [{name: a, at_risk: [1.5],"
            " promises: {resolution: {within: 1h}}}]",
            "less_than",
        ),
        ("policies: []", "missing"),
        ("version: 1\npolicies: []\nsurprise: 1", "extra_forbidden"),
    ],
)
def test_bad_policies_name_the_problem(text: str, code: str):
    with pytest.raises(ValidationError) as info:
        load(text)
    assert info.value.errors()[0]["type"] == code


def test_a_policy_may_give_no_promise_and_explicit_ones_still_hold(tmp_path: Path) -> None:
    """Issue 20: `promises: {}` was refused, so "only what the events carry" had to be written
    as no policy at all, which then let a later policy match. Now it is a policy of its own."""
    from gapwatch.core.clock import ClockConfig, ItemClock
    from gapwatch.core.examples import EXAMPLES
    from gapwatch.core.validation import validate_event

    path = tmp_path / "policies.yaml"
    path.write_text(
        "version: 1\n"
        "policies:\n"
        "  - {name: explicit-only, match: {team: billing}, promises: {}}\n"
        "  - {name: everyone, promises: {resolution: {within: 1h}}}\n"
    )
    policies = load_policies(path)
    assert policies.select({"team": "billing"}).name == "explicit-only"  # type: ignore[union-attr]
    clock = ItemClock("T-1001", ClockConfig.from_policies(policies))
    clock.apply(validate_event(EXAMPLES["gapwatch.ticket.opened.v1"]))  # team billing
    assert [p.kind.value for p in clock.open_promises] == ["first_response"]  # its own, alone

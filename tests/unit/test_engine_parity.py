"""The compiled engine against the Python reference: the same questions, the same answers.

Issue 21's port moves the scorer's per-event work into `gapwatch_engine` piece by piece. Each
piece is held here to the Python implementation it replaces, on generated inputs: any answer
or error that differs fails, with the input that shows it.

Piece one: business calendars (`BusinessCalendar` answers with the engine, `ReferenceCalendar`
in Python). The calendars cover what makes business time hard: DST both ways (at 02:00, at
midnight, 30 minutes, a whole skipped day in Samoa), lunch breaks, days open across midnight,
partial closures and country holidays.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gapwatch.core.calendar import (
    BusinessCalendar,
    CalendarError,
    CalendarSpec,
    ReferenceCalendar,
)

POLICIES = Path(__file__).resolve().parents[2] / "deploy" / "config" / "policies.yaml"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")

SPECS: list[dict[str, Any]] = [
    *yaml.safe_load(POLICIES.read_text())["calendars"],
    {
        "name": "lunch-and-closures",
        "timezone": "Europe/Amsterdam",
        "hours": {d: [["09:00", "12:00"], ["13:00", "17:30"]] for d in WEEKDAYS},
        "holidays": {
            "countries": [{"country": "DE", "subdiv": "BY"}],
            "dates": ["2026-12-24", "2027-01-02"],
            "partial": [
                {"date": "2026-12-31", "closed_from": "13:00", "closed_until": "24:00"},
                {"date": "2026-10-23", "closed_from": "10:00", "closed_until": "11:30"},
            ],
        },
    },
    {
        # Open through the 02:00-03:00 transitions, and over midnight.
        "name": "nights",
        "timezone": "Europe/Amsterdam",
        "hours": {
            **{d: [["00:00", "04:00"], ["22:00", "24:00"]] for d in WEEKDAYS},
            "sat": [["01:30", "03:30"]],
            "sun": [["02:00", "02:45"], ["02:45", "24:00"]],
        },
    },
    {
        # DST switched at midnight (until 2019), so days begin at 01:00 or hold 00:00 twice.
        "name": "sao-paulo",
        "timezone": "America/Sao_Paulo",
        "hours": {
            d: [["00:00", "01:30"], ["08:00", "18:00"], ["23:00", "24:00"]] for d in WEEKDAYS
        },
        "holidays": {"countries": [{"country": "BR"}]},
    },
    {
        "name": "lord-howe",  # a 30-minute DST switch
        "timezone": "Australia/Lord_Howe",
        "hours": {**{d: [["01:00", "03:00"], ["09:00", "17:00"]] for d in WEEKDAYS}},
    },
    {
        "name": "apia",  # 2011-12-30 never happened there
        "timezone": "Pacific/Apia",
        "hours": {d: [["08:00", "16:00"]] for d in (*WEEKDAYS, "sat", "sun")},
    },
    {
        "name": "new-york-24x5",
        "timezone": "America/New_York",
        "hours": {d: [["00:00", "24:00"]] for d in WEEKDAYS},
        "holidays": {"countries": [{"country": "US"}]},
    },
    {"name": "kolkata-weekend", "timezone": "Asia/Kolkata", "hours": {"sat": [["10:00", "14:00"]]}},
    {"name": "24x7-utc", "timezone": "UTC", "hours": "24x7"},
    {"name": "24x7-amsterdam", "timezone": "Europe/Amsterdam", "hours": "24x7"},
]


def _pair(doc: dict[str, Any]) -> tuple[BusinessCalendar, ReferenceCalendar]:
    spec = CalendarSpec.model_validate(doc)
    return BusinessCalendar(spec), ReferenceCalendar(spec)


PAIRS = [_pair(doc) for doc in SPECS]

# Instants around the DST changes and holidays that matter, and anywhere in 1990-2040.
NEAR = [
    datetime(2011, 12, 29, 12, tzinfo=UTC),
    datetime(2016, 10, 16, 2, tzinfo=UTC),
    datetime(2018, 2, 18, 1, tzinfo=UTC),
    datetime(2026, 3, 29, 0, tzinfo=UTC),
    datetime(2026, 10, 25, 0, tzinfo=UTC),
    datetime(2026, 11, 1, 4, tzinfo=UTC),
    datetime(2026, 12, 24, 0, tzinfo=UTC),
    datetime(2026, 12, 31, 11, tzinfo=UTC),
    datetime(2027, 4, 4, 14, tzinfo=UTC),
]
instants = st.one_of(
    st.builds(
        lambda base, offset: base + timedelta(microseconds=offset),
        st.sampled_from(NEAR),
        st.integers(-3 * 86_400_000_000, 3 * 86_400_000_000),
    ),
    st.datetimes(datetime(1990, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC)),
)
pairs = st.sampled_from(range(len(PAIRS)))
durations = st.one_of(
    st.integers(0, 40 * 86_400).map(float),
    st.floats(0, 40 * 86_400.0, allow_nan=False),
    st.sampled_from([0.0, 1e-6, 0.5, 900.0, 3600.0, 4 * 3600.0, 86_400.0]),
)
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def both(pair: int, question: str, *args: Any) -> None:
    """Ask the engine and the reference the same question: the same answer or the same error."""
    engine, reference = PAIRS[pair]
    answers = []
    for calendar in (engine, reference):
        try:
            answer = getattr(calendar, question)(*args)
            answers.append(("ok", list(answer) if question == "open_intervals" else answer))
        except CalendarError as exc:
            answers.append(("CalendarError", exc.code))
        except OverflowError:
            answers.append(("OverflowError", None))
    assert answers[0] == answers[1], (SPECS[pair]["name"], question, args)


@SETTINGS
@given(pairs, instants)
def test_is_open_and_next_open(pair: int, t: datetime) -> None:
    both(pair, "is_open", t)
    both(pair, "next_open", t)


@SETTINGS
@given(pairs, instants, durations)
def test_add_business_seconds(pair: int, start: datetime, seconds: float) -> None:
    both(pair, "add_business_seconds", start, seconds)


@SETTINGS
@given(pairs, instants, st.integers(0, 400))
def test_add_business_days(pair: int, start: datetime, days: int) -> None:
    both(pair, "add_business_days", start, days)


@SETTINGS
@given(pairs, instants, st.integers(-20 * 86_400_000_000, 20 * 86_400_000_000))
def test_business_seconds_between_and_open_intervals(pair: int, a: datetime, span: int) -> None:
    b = a + timedelta(microseconds=span)
    both(pair, "business_seconds_between", a, b)
    both(pair, "open_intervals", a, b)


@SETTINGS
@given(pairs, st.dates(date(1990, 1, 1), date(2040, 1, 1)))
def test_intervals_on(pair: int, day: date) -> None:
    both(pair, "intervals_on", day)


@pytest.mark.parametrize("pair", range(len(PAIRS)), ids=[doc["name"] for doc in SPECS])
def test_every_day_of_three_years_around_dst_has_the_same_intervals(pair: int) -> None:
    day = date(2025, 1, 1)
    while day < date(2028, 1, 1):
        both(pair, "intervals_on", day)
        day += timedelta(days=1)


def test_the_horizon_and_the_end_of_time_fail_alike() -> None:
    weekend = next(i for i, doc in enumerate(SPECS) if doc["name"] == "kolkata-weekend")
    both(weekend, "add_business_seconds", datetime(2026, 1, 1, tzinfo=UTC), 10_000 * 3600.0)
    both(weekend, "add_business_days", datetime(2026, 1, 1, tzinfo=UTC), 200)
    both(weekend, "add_business_days", datetime(9999, 12, 1, tzinfo=UTC), 30)
    both(0, "add_business_seconds", datetime(9999, 12, 31, 12, tzinfo=UTC), 86_400.0)
    both(0, "next_open", datetime(9999, 12, 31, 20, tzinfo=UTC))

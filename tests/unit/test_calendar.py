"""Business calendars: spec validation, hand-computed business-time examples and properties."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gapwatch.core import calendar as calendar_module
from gapwatch.core.calendar import (
    SEARCH_HORIZON_DAYS,
    BusinessCalendar,
    CalendarError,
    CalendarSpec,
)

AMS = ZoneInfo("Europe/Amsterdam")
NYC = ZoneInfo("America/New_York")
HOUR = 3600.0

EMEA_YAML = """
name: emea-business
version: 3
timezone: Europe/Amsterdam
hours:
  mon: [["09:00", "17:30"]]
  tue: [["09:00", "12:00"], ["13:00", "17:30"]]
  wed: [["09:00", "17:30"]]
  thu: [["09:00", "17:30"]]
  fri: [["09:00", "17:30"]]
holidays:
  countries: [{country: NL}, {country: DE, subdiv: BY}]
  dates: ["2026-12-24"]
  partial: [{date: "2026-12-31", closed_from: "13:00", closed_until: "24:00"}]
"""

WEEKDAYS_9_TO_17 = {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}


def ams(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=AMS, fold=fold)  # type: ignore[misc]


def nyc(*args: int) -> datetime:
    return datetime(*args, tzinfo=NYC)  # type: ignore[misc]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def make(hours: Any, tz: str = "Europe/Amsterdam", **holidays: Any) -> BusinessCalendar:
    return BusinessCalendar(
        CalendarSpec.model_validate(
            {"name": "test", "timezone": tz, "hours": hours, "holidays": holidays}
        )
    )


EMEA = BusinessCalendar(CalendarSpec.model_validate(yaml.safe_load(EMEA_YAML)))
PLAIN = make(WEEKDAYS_9_TO_17)  # Amsterdam, Mon-Fri 09-17, no holidays


# --- the spec ---------------------------------------------------------------------------------


def test_the_documented_yaml_shape_parses_and_round_trips():
    spec = EMEA.spec
    assert (spec.name, spec.version, spec.timezone) == ("emea-business", 3, "Europe/Amsterdam")
    assert spec.hours["tue"] == (("09:00", "12:00"), ("13:00", "17:30"))
    assert "sat" not in spec.hours
    assert [c.subdiv for c in spec.holidays.countries] == [None, "BY"]
    assert spec.holidays.dates == (date(2026, 12, 24),)
    assert spec.holidays.partial[0].closed_from == "13:00"
    assert CalendarSpec.model_validate(spec.model_dump()) == spec
    with pytest.raises(ValidationError):
        spec.name = "other"  # type: ignore[misc]  # frozen


def test_unquoted_yaml_dates_and_ranges_out_of_order_are_accepted():
    doc = yaml.safe_load(
        """
        name: x
        timezone: UTC
        hours: {mon: [["13:00", "17:00"], ["08:00", "12:00"]]}
        holidays: {dates: [2026-12-24]}
        """
    )
    spec = CalendarSpec.model_validate(doc)
    assert spec.hours["mon"] == (("08:00", "12:00"), ("13:00", "17:00"))
    assert spec.holidays.dates == (date(2026, 12, 24),)


def test_always_open_spec():
    spec = CalendarSpec.always_open(name="24x7")
    assert spec.is_always_open and spec.timezone == "UTC"
    assert CalendarSpec.model_validate({"name": "24x7", "timezone": "UTC", "hours": "24x7"}) == spec
    assert not EMEA.spec.is_always_open


@pytest.mark.parametrize(
    ("change", "loc", "code"),
    [
        ({"hours": {"Mon": [["09:00", "17:00"]]}}, ("hours", "Mon", "[key]"), "weekday"),
        ({"hours": {"monday": [["09:00", "17:00"]]}}, ("hours", "monday", "[key]"), "weekday"),
        ({"hours": {"mon": [["17:00", "09:00"]]}}, ("hours", "mon", 0), "range_order"),
        ({"hours": {"mon": [["09:00", "09:00"]]}}, ("hours", "mon", 0), "range_order"),
        ({"hours": {"mon": [["24:00", "24:00"]]}}, ("hours", "mon", 0), "range_order"),
        ({"hours": {"mon": [["09:00", "24:01"]]}}, ("hours", "mon", 0, 1), "clock_time"),
        ({"hours": {"mon": [["9am", "17:00"]]}}, ("hours", "mon", 0, 0), "clock_time"),
        ({"hours": {"mon": [["09:00", 1050]]}}, ("hours", "mon", 0, 1), "clock_time_type"),
        (
            {"hours": {"mon": [["09:00", "12:00"], ["11:00", "13:00"]]}},
            ("hours", "mon"),
            "range_overlap",
        ),
        ({"hours": {"mon": [], "tue": []}}, ("hours",), "no_business_hours"),
        ({"hours": {}}, ("hours",), "no_business_hours"),
        ({"hours": "24/7"}, ("hours",), "hours_type"),
        ({"timezone": "Europe/Amsterdm"}, ("timezone",), "unknown_timezone"),
        ({"timezone": "../etc/passwd"}, ("timezone",), "unknown_timezone"),
        ({"version": 0}, ("version",), "greater_than_equal"),
        ({"name": "has space"}, ("name",), "string_pattern_mismatch"),
        ({"colour": "blue"}, ("colour",), "extra_forbidden"),
        (
            {"holidays": {"countries": [{"country": "XX"}]}},
            ("holidays", "countries", 0, "country"),
            "unknown_country",
        ),
        (
            {"holidays": {"countries": [{"country": "DE", "subdiv": "ZZ"}]}},
            ("holidays", "countries", 0, "subdiv"),
            "unknown_subdivision",
        ),
        (
            {"holidays": {"dates": [20261224]}},
            ("holidays", "dates", 0),
            "date_type",
        ),
        (
            {
                "holidays": {
                    "partial": [
                        {"date": "2026-12-31", "closed_from": "14:00", "closed_until": "13:00"}
                    ]
                }
            },
            ("holidays", "partial", 0),
            "range_order",
        ),
    ],
)
def test_bad_specs_are_rejected_naming_the_field(
    change: dict[str, Any], loc: tuple[Any, ...], code: str
):
    doc = {**yaml.safe_load(EMEA_YAML), **change}
    with pytest.raises(ValidationError) as info:
        CalendarSpec.model_validate(doc)
    errors = info.value.errors()
    assert [(e["loc"], e["type"]) for e in errors] == [(loc, code)], errors


def test_error_messages_say_what_to_do():
    def message(change: dict[str, Any]) -> str:
        with pytest.raises(ValidationError) as info:
            CalendarSpec.model_validate({**yaml.safe_load(EMEA_YAML), **change})
        return str(info.value.errors()[0]["msg"])

    assert "quote clock times" in message({"hours": {"mon": [["09:00", 1050]]}})
    assert "'Mon'" in message({"hours": {"Mon": [["09:00", "17:00"]]}})
    assert "'Europe/Amsterdm'" in message({"timezone": "Europe/Amsterdm"})
    assert "'13:00'" in message({"hours": {"mon": [["17:00", "13:00"]]}})


def test_unquoted_yaml_sexagesimal_time_is_caught():
    doc = yaml.safe_load("name: x\ntimezone: UTC\nhours: {mon: [[09:00, 17:30]]}\n")
    assert doc["hours"]["mon"][0][1] == 1050  # what YAML 1.1 makes of 17:30
    with pytest.raises(ValidationError, match="quote clock times"):
        CalendarSpec.model_validate(doc)


def test_a_calendar_that_never_opens_is_refused_even_unvalidated():
    spec = CalendarSpec.model_construct(name="x", version=1, timezone="UTC", hours={})
    with pytest.raises(CalendarError) as info:
        BusinessCalendar(spec)
    assert info.value.code == "no_business_hours"


# --- hand-computed examples -------------------------------------------------------------------


def test_results_are_utc():
    due = PLAIN.add_business_seconds(ams(2026, 6, 5, 16), 2 * HOUR)
    assert due.tzinfo is UTC
    assert PLAIN.next_open(ams(2026, 6, 6, 12)).tzinfo is UTC


def test_weekend_is_skipped():
    fri_16 = ams(2026, 6, 5, 16)  # CEST
    assert PLAIN.add_business_seconds(fri_16, 2 * HOUR) == utc(2026, 6, 8, 8)  # Mon 10:00 CEST
    assert PLAIN.business_seconds_between(fri_16, ams(2026, 6, 8, 10)) == 2 * HOUR
    assert PLAIN.next_open(ams(2026, 6, 6, 12)) == ams(2026, 6, 8, 9)
    assert not PLAIN.is_open(ams(2026, 6, 7, 12))


def test_opening_instant_is_open_and_closing_instant_is_not():
    assert PLAIN.is_open(ams(2026, 6, 8, 9))
    assert not PLAIN.is_open(ams(2026, 6, 8, 8, 59))
    assert PLAIN.is_open(ams(2026, 6, 8, 16, 59))
    assert not PLAIN.is_open(ams(2026, 6, 8, 17))
    assert PLAIN.next_open(ams(2026, 6, 8, 17)) == ams(2026, 6, 9, 9)
    # Time running out exactly at the close is due at the close, not at the next opening.
    assert PLAIN.add_business_seconds(ams(2026, 6, 8, 16), HOUR) == ams(2026, 6, 8, 17)
    # Zero seconds starts the clock at the next business instant.
    assert PLAIN.add_business_seconds(ams(2026, 6, 8, 17), 0) == ams(2026, 6, 9, 9)


def test_lunch_break():
    tue_11 = ams(2026, 6, 9, 11)
    assert EMEA.add_business_seconds(tue_11, 2 * HOUR) == ams(2026, 6, 9, 14)
    assert not EMEA.is_open(ams(2026, 6, 9, 12, 30))
    assert EMEA.next_open(ams(2026, 6, 9, 12, 30)) == ams(2026, 6, 9, 13)
    assert EMEA.business_seconds_between(ams(2026, 6, 9, 9), ams(2026, 6, 9, 17, 30)) == 7.5 * HOUR
    assert EMEA.business_seconds_between(ams(2026, 6, 8, 9), ams(2026, 6, 8, 17, 30)) == 8.5 * HOUR


def test_kings_day_from_the_holidays_package():
    assert not EMEA.is_open(ams(2026, 4, 27, 10))  # Monday, King's Day
    fri_16 = ams(2026, 4, 24, 16)
    assert EMEA.add_business_seconds(fri_16, 2 * HOUR) == ams(2026, 4, 28, 9, 30)  # Tue 09:00+30m
    assert EMEA.next_open(ams(2026, 4, 25, 12)) == ams(2026, 4, 28, 9)
    assert EMEA.intervals_on(date(2026, 4, 27)) == ()


def test_subdivision_holiday():
    # Corpus Christi, Thu 2026-06-04, is a holiday in Bavaria, not in the Netherlands.
    assert not EMEA.is_open(ams(2026, 6, 4, 10))
    assert make(WEEKDAYS_9_TO_17, countries=[{"country": "NL"}]).is_open(ams(2026, 6, 4, 10))


def test_explicit_closed_date():
    cal = make(WEEKDAYS_9_TO_17, dates=["2026-12-24"])
    wed_16 = ams(2026, 12, 23, 16)  # CET
    assert cal.add_business_seconds(wed_16, 2 * HOUR) == utc(2026, 12, 25, 9)  # Fri 10:00 CET
    assert not cal.is_open(ams(2026, 12, 24, 10))


def test_partial_day_closure_and_new_year():
    assert EMEA.is_open(ams(2026, 12, 31, 12, 59))
    assert not EMEA.is_open(ams(2026, 12, 31, 13))
    # Thu 31 Dec 12:00 + 2h: one hour until the 13:00 closure, then New Year's Day (Fri) and the
    # weekend are closed, so the second hour is Mon 4 Jan 09:00-10:00.
    assert EMEA.add_business_seconds(ams(2026, 12, 31, 12), 2 * HOUR) == ams(2027, 1, 4, 10)
    assert EMEA.business_seconds_between(ams(2026, 12, 31, 0), ams(2027, 1, 1, 0)) == 4 * HOUR


def test_ranges_meeting_at_midnight():
    cal = make({"fri": [["20:00", "24:00"]], "sat": [["00:00", "04:00"]]}, tz="UTC")
    fri_19 = utc(2026, 6, 5, 19)
    assert cal.business_seconds_between(fri_19, utc(2026, 6, 6, 5)) == 8 * HOUR
    assert cal.add_business_seconds(utc(2026, 6, 5, 23), 2 * HOUR) == utc(2026, 6, 6, 1)
    assert cal.is_open(utc(2026, 6, 6, 0))
    assert not cal.is_open(utc(2026, 6, 6, 4))
    assert cal.next_open(utc(2026, 6, 6, 4)) == utc(2026, 6, 12, 20)


@pytest.mark.parametrize(
    ("hours", "day", "open_", "close"),
    [
        # Spring forward, Europe/Amsterdam, Sun 2026-03-29: 02:00 CET -> 03:00 CEST.
        ([["01:00", "05:00"]], date(2026, 3, 29), utc(2026, 3, 29, 0), utc(2026, 3, 29, 3)),
        ([["00:00", "24:00"]], date(2026, 3, 29), utc(2026, 3, 28, 23), utc(2026, 3, 29, 22)),
        # A start inside the skipped hour opens when the clock jumps past it (03:00 CEST).
        ([["02:30", "04:00"]], date(2026, 3, 29), utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)),
        # Fall back, Sun 2026-10-25: 03:00 CEST -> 02:00 CET; the day has 25 hours.
        ([["01:00", "05:00"]], date(2026, 10, 25), utc(2026, 10, 24, 23), utc(2026, 10, 25, 4)),
        ([["00:00", "24:00"]], date(2026, 10, 25), utc(2026, 10, 24, 22), utc(2026, 10, 25, 23)),
        # A start inside the repeated hour means its first occurrence (CEST).
        (
            [["02:30", "04:00"]],
            date(2026, 10, 25),
            utc(2026, 10, 25, 0, 30),
            utc(2026, 10, 25, 3),
        ),
    ],
)
def test_amsterdam_dst_days(hours: Any, day: date, open_: datetime, close: datetime):
    cal = make({"sun": hours})
    assert cal.intervals_on(day) == ((open_, close),)
    noon = utc(day.year, day.month, day.day, 12)
    week_before, week_after = noon - timedelta(days=3), noon + timedelta(days=3)
    expected = (close - open_).total_seconds()
    assert cal.business_seconds_between(week_before, week_after) == expected
    assert cal.add_business_seconds(week_before, expected) == close
    assert cal.add_business_seconds(week_before, HOUR / 2) == open_ + timedelta(minutes=30)


def test_dst_spring_forward_business_time():
    cal = make({"sun": [["01:00", "05:00"]]})
    # 01:00 CET plus one business hour is 03:00 CEST: the clock skipped 02:00-03:00.
    assert cal.add_business_seconds(ams(2026, 3, 29, 1), HOUR) == ams(2026, 3, 29, 3)
    assert cal.is_open(ams(2026, 3, 29, 3, 30))
    assert cal.business_seconds_between(ams(2026, 3, 29, 1), ams(2026, 3, 29, 5)) == 3 * HOUR


def test_dst_fall_back_business_time():
    cal = make({"sun": [["01:00", "05:00"]]})
    first_0230 = ams(2026, 10, 25, 2, 30, fold=0)  # CEST
    second_0230 = ams(2026, 10, 25, 2, 30, fold=1)  # CET, one hour later
    assert cal.is_open(first_0230) and cal.is_open(second_0230)
    assert cal.business_seconds_between(first_0230, second_0230) == HOUR
    assert cal.add_business_seconds(ams(2026, 10, 25, 1), 2 * HOUR) == utc(2026, 10, 25, 1)
    assert cal.business_seconds_between(ams(2026, 10, 25, 1), ams(2026, 10, 25, 5)) == 5 * HOUR


def test_new_york_dst_days():
    cal = make({"sun": [["00:00", "06:00"]]}, tz="America/New_York")
    # 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
    assert cal.intervals_on(date(2026, 3, 8)) == ((utc(2026, 3, 8, 5), utc(2026, 3, 8, 10)),)
    assert cal.intervals_on(date(2026, 11, 1)) == ((utc(2026, 11, 1, 4), utc(2026, 11, 1, 11)),)
    assert cal.add_business_seconds(nyc(2026, 3, 8, 1), HOUR) == nyc(2026, 3, 8, 3)
    assert cal.business_seconds_between(nyc(2026, 10, 31), nyc(2026, 11, 2)) == 7 * HOUR


def test_always_open_calendar():
    cal = BusinessCalendar.always_open()
    t = utc(2026, 3, 28, 22, 17, 3)
    assert cal.is_open(t) and cal.next_open(t) == t
    assert cal.add_business_seconds(t, 1e6) == t + timedelta(seconds=1e6)
    assert cal.business_seconds_between(t, t + timedelta(days=30)) == 30 * 86400
    assert cal.add_business_days(t, 1) == t + timedelta(days=1)


def test_always_open_local_calendar_joins_days_across_dst():
    cal = make("24x7")  # Amsterdam
    sat_noon = ams(2026, 3, 28, 12)
    assert cal.business_seconds_between(sat_noon, ams(2026, 3, 30, 12)) == 47 * HOUR
    # A business day is a local day: Sat 12:00 CET -> Sun 12:00 CEST, 23 hours later.
    assert cal.add_business_days(sat_noon, 1) == ams(2026, 3, 29, 12)
    assert cal.add_business_days(sat_noon, 1) - sat_noon == timedelta(hours=23)


def test_business_day_from_the_repeated_hour_never_goes_backwards():
    cal = make("24x7")  # Amsterdam
    late_first_pass = ams(2026, 10, 25, 2, 59, fold=0)  # CEST
    early_second_pass = ams(2026, 10, 25, 2, 1, fold=1)  # CET, one hour and two minutes later
    assert cal.add_business_days(late_first_pass, 1) == ams(2026, 10, 26, 2, 59)
    # The wall clock reads 02:01 again, but 03:00 has already been reached once.
    assert cal.add_business_days(early_second_pass, 1) == ams(2026, 10, 26, 3)


def test_long_spans_are_counted_per_day():
    # 2026-06-01 (Mon) to 2026-08-10 (Mon): ten full weeks of 5 x 8 h.
    start, end = ams(2026, 6, 1), ams(2026, 8, 10)
    assert PLAIN.business_seconds_between(start, end) == 10 * 5 * 8 * HOUR
    assert PLAIN.add_business_seconds(start, 10 * 5 * 8 * HOUR) == ams(2026, 8, 7, 17)
    assert PLAIN.business_seconds_between(end, start) == -10 * 5 * 8 * HOUR
    # A year of a holiday calendar stays fast (no minute-by-minute walk).
    began = time.perf_counter()
    EMEA.business_seconds_between(ams(2026, 1, 1), ams(2027, 1, 1))
    assert time.perf_counter() - began < 0.5


def test_open_intervals_are_clipped_and_ordered():
    got = list(EMEA.open_intervals(ams(2026, 6, 9, 11), ams(2026, 6, 10, 10)))
    assert got == [
        (ams(2026, 6, 9, 11), ams(2026, 6, 9, 12)),
        (ams(2026, 6, 9, 13), ams(2026, 6, 9, 17, 30)),
        (ams(2026, 6, 10, 9), ams(2026, 6, 10, 10)),
    ]


# --- business days ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "days", "due"),
    [
        (ams(2026, 6, 9, 15), 1, ams(2026, 6, 10, 15)),  # Tue 15:00 -> Wed 15:00
        (ams(2026, 6, 9, 15), 0, ams(2026, 6, 9, 15)),
        (ams(2026, 6, 9, 15), 3, ams(2026, 6, 12, 15)),  # -> Fri
        (ams(2026, 6, 12, 15), 1, ams(2026, 6, 15, 15)),  # Fri -> Mon
        (ams(2026, 4, 24, 15), 1, ams(2026, 4, 28, 15)),  # Fri -> Tue: weekend + King's Day
        (ams(2026, 6, 13, 10), 1, ams(2026, 6, 16, 9)),  # Sat: clock starts Mon 09:00 -> Tue
        (ams(2026, 6, 9, 18), 1, ams(2026, 6, 11, 9)),  # after close Tue: Wed 09:00 -> Thu
        (ams(2026, 6, 9, 18), 0, ams(2026, 6, 10, 9)),
        (ams(2026, 6, 8, 12, 30), 1, ams(2026, 6, 9, 13)),  # Tue is at lunch at 12:30
        (ams(2026, 6, 8, 17, 15), 1, ams(2026, 6, 9, 17, 15)),
        (ams(2026, 12, 30, 15), 1, ams(2026, 12, 31, 13)),  # closes at 13:00: due at the close
        (ams(2026, 12, 23, 15), 1, ams(2026, 12, 28, 15)),  # 24th closed, 25th/26th NL
        (ams(2026, 3, 27, 15), 1, ams(2026, 3, 30, 15)),  # across spring forward: 71 h
        (ams(2026, 10, 23, 15), 1, ams(2026, 10, 26, 15)),  # across fall back: 73 h
    ],
)
def test_add_business_days(start: datetime, days: int, due: datetime):
    assert EMEA.add_business_days(start, days) == due


def test_business_day_on_a_day_with_other_hours():
    cal = make({"thu": [["09:00", "17:00"]], "fri": [["10:00", "14:00"]]})
    assert cal.add_business_days(ams(2026, 6, 4, 9, 30), 1) == ams(2026, 6, 5, 10)  # before open
    assert cal.add_business_days(ams(2026, 6, 4, 12), 1) == ams(2026, 6, 5, 12)
    assert cal.add_business_days(ams(2026, 6, 4, 16), 1) == ams(2026, 6, 5, 14)  # at the close
    assert cal.add_business_days(ams(2026, 6, 4, 16), 2) == ams(2026, 6, 11, 16)


def test_new_york_business_day_across_dst():
    cal = make(WEEKDAYS_9_TO_17, tz="America/New_York")
    assert cal.add_business_days(nyc(2026, 3, 6, 15), 1) == utc(2026, 3, 9, 19)  # 15:00 EDT


# --- errors -----------------------------------------------------------------------------------


def test_naive_and_invalid_arguments_are_refused():
    for call in (
        lambda: PLAIN.is_open(datetime(2026, 6, 8, 10)),
        lambda: PLAIN.next_open(datetime(2026, 6, 8, 10)),
        lambda: PLAIN.business_seconds_between(utc(2026, 6, 8), datetime(2026, 6, 9)),
    ):
        with pytest.raises(CalendarError) as info:
            call()
        assert info.value.code == "naive_datetime" and not info.value.retriable
    for seconds in (-1.0, float("nan"), float("inf"), True):
        with pytest.raises(CalendarError, match="invalid_seconds"):
            PLAIN.add_business_seconds(utc(2026, 6, 8), seconds)
    for days in (-1, 1.5, True):
        with pytest.raises(CalendarError, match="invalid_days"):
            PLAIN.add_business_days(utc(2026, 6, 8), days)  # type: ignore[arg-type]


def test_a_calendar_closed_past_the_horizon_raises_instead_of_looping():
    mondays = [date(2026, 6, 1) + timedelta(weeks=w) for w in range(SEARCH_HORIZON_DAYS // 7 + 2)]
    cal = make({"mon": [["09:00", "17:00"]]}, dates=[d.isoformat() for d in mondays])
    began = time.perf_counter()
    for call in (
        lambda: cal.next_open(utc(2026, 6, 1)),
        lambda: cal.add_business_days(utc(2026, 6, 1), 1),
        lambda: PLAIN.add_business_seconds(utc(2026, 6, 1), 10 * 365 * 86400.0),
        lambda: PLAIN.add_business_days(utc(2026, 6, 1), 5000),
    ):
        with pytest.raises(CalendarError) as info:
            call()
        assert info.value.code == "beyond_horizon"
    assert time.perf_counter() - began < 2
    # The first Monday after the closures is still reachable from within the horizon.
    later = mondays[-1] + timedelta(weeks=1)
    assert cal.next_open(utc(later.year, later.month, later.day) - timedelta(days=3)) == ams(
        later.year, later.month, later.day, 9
    )


def test_holidays_are_looked_up_once_per_year(monkeypatch: pytest.MonkeyPatch):
    calls: list[int | None] = []
    real = calendar_module.holidays_lib.country_holidays

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("years"))
        return real(*args, **kwargs)

    monkeypatch.setattr(calendar_module.holidays_lib, "country_holidays", counting)
    cal = BusinessCalendar(EMEA.spec)
    cal.business_seconds_between(ams(2026, 1, 1), ams(2027, 12, 30))
    cal.business_seconds_between(ams(2026, 3, 1), ams(2027, 3, 1))
    assert sorted(calls) == [2026, 2026, 2027, 2027]  # NL and DE-BY, once per year


# --- properties -------------------------------------------------------------------------------

CALENDARS = {
    "emea": EMEA,
    "nyc-late": make(
        {
            "mon": [["00:00", "06:00"], ["20:00", "24:00"]],
            "sun": [["00:00", "06:00"], ["20:00", "24:00"]],
            "wed": [["09:00", "17:00"]],
        },
        tz="America/New_York",
        countries=[{"country": "US"}],
        partial=[{"date": "2026-11-02", "closed_from": "01:00", "closed_until": "04:00"}],
    ),
    # Range edges inside the skipped and the repeated hour of Europe/Amsterdam.
    "ams-dst-edges": make(
        {"sun": [["00:00", "02:15"], ["02:45", "05:00"]], "sat": [["22:00", "24:00"]]}
    ),
    "ams-24x7": make("24x7"),
    "utc-24x7": BusinessCalendar.always_open(),
}
# Instants near the awkward places: DST switches in both zones, year ends, holidays.
ANCHORS = [
    utc(2026, 3, 8, 7),
    utc(2026, 3, 29, 1),
    utc(2026, 10, 25, 1),
    utc(2026, 11, 1, 6),
    utc(2026, 12, 31, 12),
    utc(2026, 4, 27, 8),
    utc(2027, 3, 28, 1),
]
instants = st.one_of(
    st.datetimes(
        min_value=datetime(2025, 12, 1), max_value=datetime(2028, 1, 31), timezones=st.just(UTC)
    ),
    st.builds(
        lambda anchor, offset: anchor + timedelta(seconds=offset),
        st.sampled_from(ANCHORS),
        st.integers(-3 * 86400, 3 * 86400),
    ),
)
calendars = st.sampled_from(sorted(CALENDARS))
# The wall-clock oracle cannot tell which occurrence of a repeated time a range edge means.
wall_clock_calendars = st.sampled_from(sorted(set(CALENDARS) - {"ams-dst-edges"}))
business_seconds = st.floats(min_value=0, max_value=20 * 86400, allow_nan=False)


@given(calendars, instants)
def test_next_open_is_open_and_not_earlier(name: str, t: datetime):
    cal = CALENDARS[name]
    opened = cal.next_open(t)
    assert opened >= t and cal.is_open(opened)
    assert cal.business_seconds_between(t, opened) == 0
    assert (opened == t) == cal.is_open(t)


@given(instants, st.floats(min_value=0, max_value=400 * 86400, allow_nan=False))
def test_always_open_business_time_is_wall_time(t: datetime, seconds: float):
    for name in ("ams-24x7", "utc-24x7"):
        cal = CALENDARS[name]
        due = cal.add_business_seconds(t, seconds)
        assert due == t + timedelta(seconds=seconds)
        assert cal.business_seconds_between(t, due) == pytest.approx(seconds, abs=1e-6)
        assert cal.is_open(t)


@given(calendars, instants, business_seconds)
def test_adding_then_measuring_gives_back_the_seconds(name: str, a: datetime, seconds: float):
    cal = CALENDARS[name]
    due = cal.add_business_seconds(a, seconds)
    assert due >= a
    assert cal.business_seconds_between(a, due) == pytest.approx(seconds, abs=1e-6)
    assert cal.business_seconds_between(cal.next_open(a), due) == pytest.approx(seconds, abs=1e-6)


@given(calendars, instants, business_seconds, business_seconds)
def test_add_business_seconds_is_monotonic(name: str, a: datetime, s1: float, s2: float):
    cal = CALENDARS[name]
    low, high = sorted((s1, s2))
    assert cal.add_business_seconds(a, low) <= cal.add_business_seconds(a, high)


@given(calendars, instants, instants, instants)
def test_between_is_antisymmetric_and_additive(name: str, a: datetime, b: datetime, c: datetime):
    cal = CALENDARS[name]
    ab, bc, ac = (
        cal.business_seconds_between(a, b),
        cal.business_seconds_between(b, c),
        cal.business_seconds_between(a, c),
    )
    assert cal.business_seconds_between(b, a) == -ab
    assert ab + bc == pytest.approx(ac, abs=1e-6)
    assert ab >= 0 if b >= a else ab <= 0


@given(calendars, instants, instants, st.integers(0, 12))
def test_add_business_days_is_monotonic(name: str, a: datetime, b: datetime, days: int):
    cal = CALENDARS[name]
    a, b = sorted((a, b))
    assert cal.add_business_days(a, days) <= cal.add_business_days(b, days)
    assert cal.add_business_days(a, days) <= cal.add_business_days(a, days + 1)
    assert cal.add_business_days(a, days) >= cal.next_open(a)


def _wall_clock_is_open(cal: BusinessCalendar, t: datetime) -> bool:
    """An independent oracle: read the local wall clock and check the spec directly."""
    local = t.astimezone(cal.tz)
    spec = cal.spec
    if local.date() in cal._holidays_of_year(local.year):
        return False
    seconds = local.hour * 3600 + local.minute * 60 + local.second
    for closure in spec.holidays.partial:
        if closure.date == local.date() and (
            calendar_module.clock_seconds(closure.closed_from)
            <= seconds
            < calendar_module.clock_seconds(closure.closed_until)
        ):
            return False
    day = calendar_module.WEEKDAYS[local.weekday()]
    return any(
        calendar_module.clock_seconds(s) <= seconds < calendar_module.clock_seconds(e)
        for s, e in spec.hours.get(day, ())
    )


@settings(max_examples=40)
@given(wall_clock_calendars, instants, st.integers(0, 2 * 24 * 60))
def test_matches_a_minute_by_minute_wall_clock_oracle(name: str, a: datetime, minutes: int):
    # Every boundary of these calendars and every DST switch falls on a whole minute, so each
    # minute is wholly open or wholly closed; no range edge lies in a skipped or repeated hour,
    # where the wall clock alone is ambiguous.
    cal = CALENDARS[name]
    a = a.replace(second=0, microsecond=0)
    open_minutes = 0
    for i in range(minutes):
        t = a + timedelta(minutes=i)
        is_open = _wall_clock_is_open(cal, t)
        assert cal.is_open(t) == is_open, t
        open_minutes += is_open
    assert cal.business_seconds_between(a, a + timedelta(minutes=minutes)) == 60 * open_minutes


def _round_the_clock(timezone: str, closed: tuple[str, ...] = ()) -> BusinessCalendar:
    spec = {
        "name": "rtc",
        "timezone": timezone,
        "hours": {
            d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        },
        "holidays": {"dates": list(closed)},
    }
    return BusinessCalendar(CalendarSpec.model_validate(spec))


@given(
    st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    st.floats(min_value=0, max_value=90 * 86400, allow_nan=False),
    st.sampled_from(["UTC", "Europe/Amsterdam", "America/New_York"]),
)
def test_round_the_clock_fast_path_equals_the_general_walk(
    start: datetime, seconds: float, timezone: str
):
    fast = _round_the_clock(timezone)
    general = _round_the_clock(timezone, closed=("2099-01-01",))  # a closure far away
    assert fast._seamless and not general._seamless
    assert fast.next_open(start) == general.next_open(start)
    due = fast.add_business_seconds(start, seconds)
    assert due == general.add_business_seconds(start, seconds)
    assert fast.business_seconds_between(start, due) == general.business_seconds_between(start, due)
    assert fast.business_seconds_between(due, start) == general.business_seconds_between(due, start)

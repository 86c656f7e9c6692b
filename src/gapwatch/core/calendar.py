"""Business calendars: weekly hours, timezone and holidays, and business-time arithmetic on them.

A `CalendarSpec` is the validated form of one calendar YAML document (already parsed; this module
does no I/O). A `BusinessCalendar` answers questions about it for timezone-aware instants; every
instant it returns is in UTC, and local time exists only inside this module (STYLE rule 4).
Durations are seconds as `float` throughout the API.

Semantics, chosen so that promise clocks are well defined and monotonic:

- Open time is a set of half-open UTC intervals `[open, close)`. A calendar is open at its opening
  instant and closed at its closing instant.
- Local wall-clock times in the spec map to the *first instant at which the local clock reads that
  time or later*. So on a fall-back day a repeated time means its first occurrence, and on a
  spring-forward day a skipped time (02:30 in Europe/Amsterdam on 2026-03-29) means the
  transition instant (03:00 local). Hours spanning a DST switch therefore contain one hour less
  or more of business time, as the people working them experience. "24:00" is the start of the
  next local day.
- A *business day* is a local date with any open time left after holidays and partial closures.
- `add_business_days(start, n)`: let `t0 = next_open(start)`, on business day `D0` at local wall
  time `T`. The result is on `Dn`, the n-th business day after `D0`: the first open instant of
  `Dn` at or after wall time `T`, or `Dn`'s closing instant if `Dn` has no open time after `T`.
  Tue 15:00 + 1 day is Wed 15:00 on a plain Mon-Fri calendar; Tue 12:30 lands on Wed 13:00 if Wed
  breaks for lunch 12:00-13:00; Tue 15:00 lands on Wed 13:00 if Wed closes at 13:00. Unlike "the
  same elapsed business time into Dn", this never moves a due time backwards when the start moves
  forwards, and never spills past Dn. For the same reason T is the latest wall time the clock
  has *reached*: during the second pass of a repeated fall-back hour that is the end of the hour.
- Searches look at most `SEARCH_HORIZON_DAYS` (about three years) ahead and raise
  `CalendarError` beyond that, so a calendar closed for a long stretch cannot loop forever.

`BusinessCalendar` answers with the compiled engine (`gapwatch_engine.Calendar`, engine/src/
calendar.rs); `ReferenceCalendar`, the Python implementation it was ported from, stays as the
reference that differential tests hold the engine to (tests/unit/test_engine_parity.py). The
engine takes instants as microseconds since the epoch and asks this module, year by year, for
the closed dates (the `holidays` package stays Python).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Annotated, Any, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import gapwatch_engine
import holidays as holidays_lib
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "ALWAYS_OPEN",
    "SEARCH_HORIZON_DAYS",
    "WEEKDAYS",
    "BusinessCalendar",
    "CalendarError",
    "CalendarSpec",
    "CountryHolidays",
    "HolidaySpec",
    "PartialClosure",
    "ReferenceCalendar",
    "clock_seconds",
]

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""The weekday keys of `hours`, in `date.weekday()` order."""

SEARCH_HORIZON_DAYS = 3 * 366 + 2
"""How many local days a forward search may scan before giving up."""

ALWAYS_OPEN = "24x7"

_DAY_SECONDS = 86_400
_ONE_DAY = timedelta(days=1)
_ZERO = timedelta(0)
_SECOND = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CLOCK = re.compile(r"^(?P<h>[0-9]{1,2}):(?P<m>[0-5][0-9])(?::(?P<s>[0-5][0-9]))?$")

Span = tuple[int, int]
"""[start, end) in seconds since local midnight; end may be 86400 (24:00)."""
Interval = tuple[datetime, datetime]
"""[open, close) as UTC instants."""


class CalendarError(ValueError):
    """A question the calendar cannot answer; asking again with the same input cannot help."""

    retriable = False

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"{code}: {message}")


# --- the spec ---------------------------------------------------------------------------------


def clock_seconds(value: str) -> int:
    """Seconds since local midnight of a validated clock time: "24:00" -> 86400."""
    parts = [int(p) for p in value.split(":")]
    return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) > 2 else 0)


def _parse_clock(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        # PyYAML follows YAML 1.1, where an unquoted 17:30 is the base-60 integer 1050 (09:00 stays
        # a string only because of its leading zero). Guessing back is unsafe; say what happened.
        raise PydanticCustomError(
            "clock_time_type",
            "got the number {value}: quote clock times in YAML ('17:30'); unquoted, YAML 1.1 "
            "reads 17:30 as a base-60 integer",
            {"value": value},
        )
    if not isinstance(value, str):
        raise PydanticCustomError("clock_time_type", "expected a clock time string 'HH:MM'")
    match = _CLOCK.match(value)
    if match is None or int(match["h"]) > 24:
        raise PydanticCustomError(
            "clock_time", "'{value}' is not a clock time 'HH:MM' (00:00 to 24:00)", {"value": value}
        )
    hour, minute, second = int(match["h"]), int(match["m"]), int(match["s"] or 0)
    if hour == 24 and (minute or second):
        raise PydanticCustomError(
            "clock_time", "'{value}' is past 24:00, the end of the day", {"value": value}
        )
    return f"{hour:02d}:{minute:02d}" + (f":{second:02d}" if second else "")


ClockTime = Annotated[str, BeforeValidator(_parse_clock)]
"""A local wall-clock time "HH:MM" or "HH:MM:SS", "00:00" to "24:00" (end of day)."""


def _check_range(value: tuple[str, str]) -> tuple[str, str]:
    start, end = value
    if clock_seconds(end) <= clock_seconds(start):
        raise PydanticCustomError(
            "range_order",
            "range end '{end}' must be after its start '{start}'",
            {"start": start, "end": end},
        )
    return value


TimeRange = Annotated[tuple[ClockTime, ClockTime], AfterValidator(_check_range)]


def _check_day(ranges: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    ordered = tuple(sorted(ranges, key=lambda r: clock_seconds(r[0])))
    for before, after in pairwise(ordered):
        if clock_seconds(after[0]) < clock_seconds(before[1]):
            raise PydanticCustomError(
                "range_overlap",
                "ranges {a} and {b} overlap",
                {"a": list(before), "b": list(after)},
            )
    return ordered


DayHours = Annotated[tuple[TimeRange, ...], AfterValidator(_check_day)]


def _check_weekday(value: str) -> str:
    if value not in WEEKDAYS:
        raise PydanticCustomError(
            "weekday",
            "unknown weekday '{value}'; expected one of {expected}",
            {"value": value, "expected": ", ".join(WEEKDAYS)},
        )
    return value


Weekday = Annotated[str, StringConstraints(strict=True), AfterValidator(_check_weekday)]


def _expand_always_open(value: Any) -> Any:
    if value == ALWAYS_OPEN:
        return {day: [("00:00", "24:00")] for day in WEEKDAYS}
    if isinstance(value, str):
        raise PydanticCustomError(
            "hours_type",
            "hours must be a mapping of weekday to ranges, or '{always}'; got '{value}'",
            {"always": ALWAYS_OPEN, "value": value},
        )
    return value


def _check_week(
    value: dict[str, tuple[tuple[str, str], ...]],
) -> dict[str, tuple[tuple[str, str], ...]]:
    if not any(value.values()):
        # Checked here rather than discovered by a search: a calendar that never opens would make
        # every due time undefined.
        raise PydanticCustomError(
            "no_business_hours", "no weekday has any open time; a calendar must open sometime"
        )
    return value


WeeklyHours = Annotated[
    dict[Weekday, DayHours], BeforeValidator(_expand_always_open), AfterValidator(_check_week)
]


def _require_date(value: Any) -> Any:
    # Lax pydantic would read a Unix time or a datetime as a date; a holiday is a calendar date.
    if isinstance(value, datetime) or not isinstance(value, str | date):
        raise PydanticCustomError("date_type", "expected a calendar date 'YYYY-MM-DD'")
    return value


CalendarDate = Annotated[date, BeforeValidator(_require_date)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CountryHolidays(_Frozen):
    """Public holidays of one country (and optionally one subdivision) from `holidays`."""

    country: Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Z]{2,3}$")] = Field(
        description="ISO 3166-1 alpha-2 code as known to the `holidays` package, e.g. NL."
    )
    subdiv: Annotated[str, StringConstraints(strict=True, min_length=1)] | None = Field(
        default=None, description="Subdivision code, e.g. BY for Bavaria."
    )
    observed: bool = Field(
        default=True, description="Also close on the weekday a weekend holiday is observed."
    )

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str) -> str:
        try:
            holidays_lib.country_holidays(value)
        except NotImplementedError:
            raise PydanticCustomError(
                "unknown_country",
                "country '{country}' is not supported by the holidays package",
                {"country": value},
            ) from None
        return value

    @field_validator("subdiv")
    @classmethod
    def _known_subdiv(cls, value: str | None, info: ValidationInfo) -> str | None:
        country = info.data.get("country")
        if value is None or country is None:
            return value
        try:
            holidays_lib.country_holidays(country, subdiv=value)
        except NotImplementedError:
            known = holidays_lib.country_holidays(country).subdivisions
            raise PydanticCustomError(
                "unknown_subdivision",
                "'{subdiv}' is not a subdivision of {country}; known: {known}",
                {"subdiv": value, "country": country, "known": ", ".join(known) or "none"},
            ) from None
        return value


class PartialClosure(_Frozen):
    """Part of one date closed, e.g. New Year's Eve from 13:00."""

    date: CalendarDate
    closed_from: ClockTime = "00:00"
    closed_until: ClockTime = "24:00"

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if clock_seconds(self.closed_until) <= clock_seconds(self.closed_from):
            raise PydanticCustomError(
                "range_order",
                "closed_until '{until}' must be after closed_from '{since}'",
                {"until": self.closed_until, "since": self.closed_from},
            )
        return self


class HolidaySpec(_Frozen):
    """Closures on top of the weekly hours."""

    countries: tuple[CountryHolidays, ...] = ()
    dates: tuple[CalendarDate, ...] = Field(default=(), description="Full-day closures.")
    partial: tuple[PartialClosure, ...] = Field(default=(), description="Part-day closures.")


class CalendarSpec(_Frozen):
    """One business calendar as configured in YAML (after `yaml.safe_load`)."""

    name: Annotated[
        str,
        StringConstraints(strict=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$"),
    ]
    version: Annotated[int, Field(strict=True, ge=1)] = 1
    timezone: Annotated[str, StringConstraints(strict=True, min_length=1)] = Field(
        description="IANA timezone name, e.g. Europe/Amsterdam."
    )
    hours: WeeklyHours = Field(
        description="Weekday -> list of [start, end] local times; absent day = closed; or '24x7'."
    )
    holidays: HolidaySpec = HolidaySpec()

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "unknown_timezone",
                "'{value}' is not an IANA timezone name (like Europe/Amsterdam or UTC)",
                {"value": value},
            ) from None
        return value

    @classmethod
    def always_open(cls, name: str = ALWAYS_OPEN, timezone: str = "UTC") -> CalendarSpec:
        """A calendar open every second of every day: business time equals wall time."""
        return cls.model_validate({"name": name, "timezone": timezone, "hours": ALWAYS_OPEN})

    @property
    def is_always_open(self) -> bool:
        """Whether the weekly hours cover every second (holidays may still close days)."""
        full = (("00:00", "24:00"),)
        return all(self.hours.get(day) == full for day in WEEKDAYS)


# --- the calendar -----------------------------------------------------------------------------


def _merge(spans: list[Span]) -> tuple[Span, ...]:
    out: list[Span] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return tuple(out)


def _subtract(spans: tuple[Span, ...], closed: tuple[Span, ...]) -> tuple[Span, ...]:
    out: list[Span] = []
    for start, end in spans:
        pieces = [(start, end)]
        for c_start, c_end in closed:
            pieces = [
                piece
                for s, e in pieces
                for piece in ((s, min(e, c_start)), (max(s, c_end), e))
                if piece[0] < piece[1]
            ]
        out.extend(pieces)
    return tuple(out)


def _as_utc(t: datetime, what: str = "t") -> datetime:
    if t.tzinfo is UTC:  # every event time is normalised to UTC on validation: the usual case
        return t
    if t.tzinfo is None or t.utcoffset() is None:
        raise CalendarError("naive_datetime", f"{what} must be timezone-aware, got {t.isoformat()}")
    return t.astimezone(UTC)


class ReferenceCalendar:
    """Business-time arithmetic on one `CalendarSpec` in Python: the reference the compiled
    `BusinessCalendar` is tested against. Instants in, UTC instants out."""

    def __init__(self, spec: CalendarSpec, *, cached_days: int = 4096) -> None:
        self.spec = spec
        self.tz = ZoneInfo(spec.timezone)
        self._weekly: tuple[tuple[Span, ...], ...] = tuple(
            _merge([(clock_seconds(s), clock_seconds(e)) for s, e in spec.hours.get(day, ())])
            for day in WEEKDAYS
        )
        if not any(self._weekly):  # a spec built with model_construct skips validation
            raise CalendarError("no_business_hours", f"calendar {spec.name!r} never opens")
        partial: dict[date, list[Span]] = {}
        for closure in spec.holidays.partial:
            partial.setdefault(closure.date, []).append(
                (clock_seconds(closure.closed_from), clock_seconds(closure.closed_until))
            )
        self._partial = {day: _merge(spans) for day, spans in partial.items()}
        self._closed_dates = frozenset(spec.holidays.dates)
        # Open around the clock with no closures: business time is wall time, and the day-by-day
        # walk can be skipped (24x7 promises are the hot path of a busy scorer).
        holidays = spec.holidays
        self._seamless = (
            all(day == ((0, _DAY_SECONDS),) for day in self._weekly)
            and not holidays.countries
            and not holidays.dates
            and not holidays.partial
        )
        # Both caches are per instance (a global cache would pin calendars in memory) and bounded:
        # a long-running scorer touches a sliding window of days, years apart only on bad input.
        self._holidays_of_year = lru_cache(maxsize=16)(self._compute_holidays_of_year)
        self._intervals_of_day = lru_cache(maxsize=cached_days)(self._compute_intervals_of_day)

    @classmethod
    def always_open(cls, name: str = ALWAYS_OPEN) -> Self:
        """A 24x7 UTC calendar."""
        return cls(CalendarSpec.always_open(name))

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.spec.name!r} v{self.spec.version}, {self.spec.timezone})"
        )

    # --- public questions -----------------------------------------------------------------

    def is_open(self, t: datetime) -> bool:
        """Whether `t` lies in business time (opening instants are open, closing ones are not)."""
        t = _as_utc(t)
        day = self._local_date(t)
        # Normally only t's own local date can hold it; the next date can when a fall-back
        # transition at midnight repeats the last hour of the day.
        for d in (day, day + _ONE_DAY):
            for start, end in self._intervals_of_day(d):
                if start > t:
                    return False
                if t < end:
                    return True
        return False

    def next_open(self, t: datetime) -> datetime:
        """`t` if it is open, else the next opening instant (UTC)."""
        t = _as_utc(t)
        if self._seamless:
            return t
        for _, start, _end in self._intervals_from(t):
            return max(start, t)
        raise AssertionError("unreachable: _intervals_from raises when it runs out")

    def add_business_seconds(self, start: datetime, seconds: float) -> datetime:
        """The first instant at which `seconds` of business time have elapsed since `start`.

        Counting starts at `next_open(start)`, so `seconds=0` gives `next_open(start)`. When the
        time runs out exactly at a closing instant, that closing instant is returned (not the
        next opening): it is the earliest instant the promise is due.
        """
        start = _as_utc(start, "start")
        remaining = _duration(seconds)
        if self._seamless and remaining < _SEAMLESS_LIMIT:
            return start + remaining
        for _, open_, close in self._intervals_from(start):
            open_ = max(open_, start)
            available = close - open_
            if remaining <= available:
                return open_ + remaining
            remaining -= available
        raise AssertionError("unreachable: _intervals_from raises when it runs out")

    def add_business_days(self, start: datetime, days: int) -> datetime:
        """The due instant `days` business days after `start` (see the module docstring).

        With `t0 = next_open(start)` on business day D0 at local wall time T: the first open
        instant at or after wall time T on the `days`-th business day after D0, or that day's
        closing instant if it has no open time after T. `days=0` gives `t0`. Monotonic in both
        `start` and `days`.
        """
        start = _as_utc(start, "start")
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise CalendarError("invalid_days", f"days must be a non-negative int, got {days!r}")
        first_day, open_, _ = next(self._intervals_from(start))
        t0 = max(open_, start)
        if days == 0:
            return t0
        # Clamped because in a midnight fall-back t0's wall date can differ from its business day.
        midnight = datetime.combine(first_day, datetime.min.time())
        offset = min(max(self._wall_reached(t0) - midnight, _ZERO), _ONE_DAY)
        target_day = first_day
        found = 0
        for _ in range(SEARCH_HORIZON_DAYS):
            target_day = self._next_date(target_day)
            if self._intervals_of_day(target_day):
                found += 1
                if found == days:
                    break
        else:
            raise self._beyond_horizon(start)
        target = self._wall_to_utc(datetime.combine(target_day, datetime.min.time()) + offset)
        intervals = self._intervals_of_day(target_day)
        for open_, close in intervals:
            if target < close:
                return max(open_, target)
        return intervals[-1][1]

    def business_seconds_between(self, a: datetime, b: datetime) -> float:
        """Business seconds elapsed from `a` to `b`; negative if `b` is before `a`."""
        a, b = _as_utc(a, "a"), _as_utc(b, "b")
        if self._seamless:
            return (b - a).total_seconds()
        if b < a:
            return -self.business_seconds_between(b, a)
        total = _ZERO  # summed as exact microseconds; a float is made once, at the end
        day, last = self._local_date(a), self._local_date(b) + _ONE_DAY
        while day <= last:
            for open_, close in self._intervals_of_day(day):
                lo, hi = max(open_, a), min(close, b)
                if lo < hi:
                    total += hi - lo
            day = self._next_date(day)
        return total.total_seconds()

    def open_intervals(self, a: datetime, b: datetime) -> Iterator[Interval]:
        """The open intervals overlapping [a, b), clipped to it, in order (UTC)."""
        a, b = _as_utc(a, "a"), _as_utc(b, "b")
        day, last = self._local_date(a), self._local_date(b) + _ONE_DAY
        while a < b and day <= last:
            for open_, close in self._intervals_of_day(day):
                lo, hi = max(open_, a), min(close, b)
                if lo < hi:
                    yield lo, hi
            day = self._next_date(day)

    def intervals_on(self, day: date) -> tuple[Interval, ...]:
        """The open intervals of one local date, in UTC; empty on a closed day."""
        return self._intervals_of_day(day)

    # --- internals ------------------------------------------------------------------------

    def _intervals_from(self, t: datetime) -> Iterator[tuple[date, datetime, datetime]]:
        """(business day, open, close) of every interval closing after `t`, in order.

        Starts at t's local date: every interval of an earlier date closes at or before the
        first instant of t's date, which is not after t.
        """
        day = self._local_date(t)
        for _ in range(SEARCH_HORIZON_DAYS):
            for open_, close in self._intervals_of_day(day):
                if close > t:
                    yield day, open_, close
            day = self._next_date(day)
        raise self._beyond_horizon(t)

    def _beyond_horizon(self, t: datetime) -> CalendarError:
        return CalendarError(
            "beyond_horizon",
            f"calendar {self.spec.name!r} has no answer within {SEARCH_HORIZON_DAYS} days of "
            f"{t.isoformat()}; it is closed for that long, or the duration is too large",
        )

    def _next_date(self, day: date) -> date:
        try:
            return day + _ONE_DAY
        except OverflowError:
            raise self._beyond_horizon(datetime.max.replace(tzinfo=UTC)) from None

    def _local_date(self, t: datetime) -> date:
        return t.astimezone(self.tz).date()

    def _wall(self, t: datetime) -> datetime:
        return t.astimezone(self.tz).replace(tzinfo=None)

    def _wall_to_utc(self, wall: datetime) -> datetime:
        """The first instant at which the local clock reads `wall` or later."""
        # For a repeated wall time fold=0 is the first occurrence; for a skipped one the two
        # folds straddle the transition, which is the answer.
        fold0 = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        fold1 = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        early, late = min(fold0, fold1), max(fold0, fold1)
        if self._wall(early) == wall:
            return early
        return _first_instant(early, late, lambda u: self._wall(u) >= wall)

    def _wall_reached(self, t: datetime) -> datetime:
        """The inverse of `_wall_to_utc`: the latest wall time whose first instant is not after t.

        That is t's wall time, except in the second pass of a repeated (fall-back) hour, where it
        is the end of the repeated stretch: reading the wall clock there would go backwards.
        """
        local = t.astimezone(self.tz)
        if not local.fold:
            return local.replace(tzinfo=None)
        # Second pass: t - repeat is the same wall time's first occurrence, before the switch.
        repeat = (local.replace(fold=0).utcoffset() or _ZERO) - (local.utcoffset() or _ZERO)
        switch = _first_instant(t - repeat, t, lambda u: u.astimezone(self.tz).fold == 1)
        return self._wall(switch) + repeat

    @property
    def holiday_data(self) -> str | None:
        """The `holidays` package version this calendar's country holidays come from (None
        when it uses none): a new version can move a due time without any config change."""
        return (
            str(getattr(holidays_lib, "__version__", "?")) if self.spec.holidays.countries else None
        )

    def _compute_holidays_of_year(self, year: int) -> frozenset[date]:
        closed = {d for d in self._closed_dates if d.year == year}
        for entry in self.spec.holidays.countries:
            closed.update(
                holidays_lib.country_holidays(
                    entry.country, subdiv=entry.subdiv, observed=entry.observed, years=year
                ).keys()
            )
        return frozenset(closed)

    def _compute_intervals_of_day(self, day: date) -> tuple[Interval, ...]:
        if day in self._holidays_of_year(day.year):
            return ()
        spans = self._weekly[day.weekday()]
        if day in self._partial:
            spans = _subtract(spans, self._partial[day])
        midnight = datetime.combine(day, datetime.min.time())
        out: list[Interval] = []
        for start, end in spans:
            open_ = self._wall_to_utc(midnight + timedelta(seconds=start))
            close = self._wall_to_utc(midnight + timedelta(seconds=end))
            if open_ >= close:  # the whole range was skipped by a spring-forward transition
                continue
            if out and open_ <= out[-1][1]:  # ranges meeting across a skipped hour
                out[-1] = (out[-1][0], max(out[-1][1], close))
            else:
                out.append((open_, close))
        return tuple(out)


class BusinessCalendar(ReferenceCalendar):
    """Business-time arithmetic on one `CalendarSpec`, answered by the compiled engine; the
    same answers as `ReferenceCalendar` (validation and the 24x7 fast path stay here)."""

    def __init__(self, spec: CalendarSpec, *, cached_days: int = 4096) -> None:
        super().__init__(spec, cached_days=cached_days)
        self._engine = gapwatch_engine.Calendar(
            spec.timezone,
            [list(day) for day in self._weekly],
            {day.toordinal(): list(spans) for day, spans in self._partial.items()},
            self._closed_ordinals,
        )

    def _closed_ordinals(self, year: int) -> list[int]:
        return [day.toordinal() for day in self._holidays_of_year(year)]

    def is_open(self, t: datetime) -> bool:
        return self._engine.is_open(_micros(_as_utc(t)))

    def next_open(self, t: datetime) -> datetime:
        t = _as_utc(t)
        if self._seamless:
            return t
        return _instant(self._ask(t, self._engine.next_open, _micros(t)))

    def add_business_seconds(self, start: datetime, seconds: float) -> datetime:
        start = _as_utc(start, "start")
        remaining = _duration(seconds)
        if self._seamless and remaining < _SEAMLESS_LIMIT:
            return start + remaining
        return _instant(
            self._ask(start, self._engine.add_business, _micros(start), remaining // _MICROSECOND)
        )

    def add_business_days(self, start: datetime, days: int) -> datetime:
        start = _as_utc(start, "start")
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise CalendarError("invalid_days", f"days must be a non-negative int, got {days!r}")
        if days >= 2**32:  # more than the horizon holds, and more than the engine takes
            raise self._beyond_horizon(start)
        return _instant(self._ask(start, self._engine.add_business_days, _micros(start), days))

    def business_seconds_between(self, a: datetime, b: datetime) -> float:
        a, b = _as_utc(a, "a"), _as_utc(b, "b")
        if self._seamless:
            return (b - a).total_seconds()
        # int / int is correctly rounded, exactly as timedelta.total_seconds().
        return self._ask(a, self._engine.business_between, _micros(a), _micros(b)) / 1_000_000

    def open_intervals(self, a: datetime, b: datetime) -> Iterator[Interval]:
        a, b = _as_utc(a, "a"), _as_utc(b, "b")
        for open_, close in self._ask(a, self._engine.open_intervals, _micros(a), _micros(b)):
            yield _instant(open_), _instant(close)

    def intervals_on(self, day: date) -> tuple[Interval, ...]:
        return tuple(
            (_instant(open_), _instant(close))
            for open_, close in self._engine.intervals_on(day.toordinal())
        )

    def _ask(self, t: datetime, question: Callable[..., _T], *args: int) -> _T:
        try:
            return question(*args)
        except gapwatch_engine.BeyondHorizon:
            raise self._beyond_horizon(t) from None


_T = TypeVar("_T")
_MICROSECOND = timedelta(microseconds=1)


def _micros(t: datetime) -> int:
    """A UTC instant as microseconds since the epoch, what the engine takes."""
    return (t - _EPOCH) // _MICROSECOND


def _instant(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _first_instant(lo: datetime, hi: datetime, reached: Callable[[datetime], bool]) -> datetime:
    """The first whole second in (lo, hi] where `reached` holds; it must not hold at lo.

    Used only around DST transitions, which fall on whole seconds.
    """
    low = (lo - _EPOCH) // _SECOND
    high = -((_EPOCH - hi) // _SECOND)  # ceiling
    while high - low > 1:
        middle = (low + high) // 2
        if reached(_EPOCH + middle * _SECOND):
            high = middle
        else:
            low = middle
    return _EPOCH + high * _SECOND


_DAY_SECONDS = 24 * 3600
# Beyond the search horizon the general path raises; the fast path must not answer instead.
_SEAMLESS_LIMIT = timedelta(days=SEARCH_HORIZON_DAYS - 2)


def _duration(seconds: float) -> timedelta:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise CalendarError("invalid_seconds", f"seconds must be a number, got {seconds!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise CalendarError("invalid_seconds", f"seconds must be finite and >= 0, got {seconds!r}")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise CalendarError("invalid_seconds", f"seconds too large: {seconds!r}") from None

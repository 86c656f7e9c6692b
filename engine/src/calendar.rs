//! Business-time arithmetic on one calendar: the compiled twin of
//! `gapwatch.core.calendar.BusinessCalendar` (its module docstring states the semantics).
//!
//! Pure Rust: instants are microseconds since the Unix epoch (UTC), local dates are chrono
//! `NaiveDate`s, and a calendar's closed dates come from its caller year by year (the Python
//! side owns the `holidays` package): a question that needs a year not handed over yet answers
//! `Err(CalendarError::NeedYear(year))`, and the caller asks again once it has added it.

use std::collections::{HashMap, HashSet};

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone,
};
use chrono_tz::Tz;

/// Local days a forward search may scan before giving up (`SEARCH_HORIZON_DAYS`).
pub const SEARCH_HORIZON_DAYS: u32 = 3 * 366 + 2;
const US: i64 = 1_000_000;
/// Days of intervals kept; a scorer touches a sliding window of days.
const CACHED_DAYS: usize = 4096;

/// Seconds since local midnight: [start, end), end may be 86400 (24:00).
pub type Span = (i64, i64);
/// [open, close) in microseconds since the epoch.
pub type Interval = (i64, i64);

#[derive(Debug, PartialEq, Eq)]
pub enum CalendarError {
    /// The closed dates of this year are needed: hand them over with `add_closed_year`.
    NeedYear(i32),
    /// No answer within `SEARCH_HORIZON_DAYS` local days.
    BeyondHorizon,
}

pub type Answer<T> = Result<T, CalendarError>;

pub struct Calendar {
    tz: Tz,
    weekly: [Vec<Span>; 7],
    partial: HashMap<NaiveDate, Vec<Span>>,
    closed: HashMap<i32, HashSet<NaiveDate>>,
    days: HashMap<NaiveDate, Vec<Interval>>,
}

impl Calendar {
    /// `weekly[0]` is Monday; spans must be merged and sorted (the Python side validated them).
    pub fn new(tz: Tz, weekly: [Vec<Span>; 7], partial: HashMap<NaiveDate, Vec<Span>>) -> Self {
        Calendar {
            tz,
            weekly,
            partial,
            closed: HashMap::new(),
            days: HashMap::new(),
        }
    }

    pub fn add_closed_year(&mut self, year: i32, dates: HashSet<NaiveDate>) {
        self.closed.insert(year, dates);
    }

    // --- public questions ----------------------------------------------------------------------

    pub fn is_open(&mut self, t: i64) -> Answer<bool> {
        let day = self.local_date(t);
        // The next date can hold t when a fall-back at midnight repeats the day's last hour.
        for d in [Some(day), day.succ_opt()].into_iter().flatten() {
            for &(start, end) in self.intervals_of_day(d)?.iter() {
                if start > t {
                    return Ok(false);
                }
                if t < end {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    pub fn next_open(&mut self, t: i64) -> Answer<i64> {
        let (_, open, _) = self.first_interval_from(t)?;
        Ok(open.max(t))
    }

    /// The first instant at which `remaining` business microseconds have elapsed since `start`.
    pub fn add_business(&mut self, start: i64, mut remaining: i64) -> Answer<i64> {
        let mut day = self.local_date(start);
        for _ in 0..SEARCH_HORIZON_DAYS {
            for &(open, close) in self.intervals_of_day(day)?.iter() {
                if close <= start {
                    continue;
                }
                let open = open.max(start);
                let available = close - open;
                if remaining <= available {
                    return Ok(open + remaining);
                }
                remaining -= available;
            }
            day = next_date(day)?;
        }
        Err(CalendarError::BeyondHorizon)
    }

    pub fn add_business_days(&mut self, start: i64, days: u32) -> Answer<i64> {
        let (first_day, open, _) = self.first_interval_from(start)?;
        let t0 = open.max(start);
        if days == 0 {
            return Ok(t0);
        }
        // Clamped: in a midnight fall-back t0's wall date can differ from its business day.
        let midnight = first_day.and_hms_opt(0, 0, 0).expect("midnight exists");
        let reached = self.wall_reached(t0);
        let offset = (reached - midnight).clamp(Duration::zero(), Duration::days(1));
        let mut target_day = first_day;
        let mut found = 0;
        let mut arrived = false;
        for _ in 0..SEARCH_HORIZON_DAYS {
            target_day = next_date(target_day)?;
            if !self.intervals_of_day(target_day)?.is_empty() {
                found += 1;
                if found == days {
                    arrived = true;
                    break;
                }
            }
        }
        if !arrived {
            return Err(CalendarError::BeyondHorizon);
        }
        let wall = target_day.and_hms_opt(0, 0, 0).expect("midnight exists") + offset;
        let target = self.wall_to_utc(wall);
        let intervals = self.intervals_of_day(target_day)?;
        for &(open, close) in intervals.iter() {
            if target < close {
                return Ok(open.max(target));
            }
        }
        Ok(intervals.last().expect("a business day has intervals").1)
    }

    /// Business microseconds from `a` to `b`; negative if `b` is before `a`.
    pub fn business_between(&mut self, a: i64, b: i64) -> Answer<i64> {
        if b < a {
            return Ok(-self.business_between(b, a)?);
        }
        let mut total = 0;
        self.each_open(a, b, |lo, hi| total += hi - lo)?;
        Ok(total)
    }

    /// The open intervals overlapping [a, b), clipped to it, in order.
    pub fn open_intervals(&mut self, a: i64, b: i64) -> Answer<Vec<Interval>> {
        let mut out = Vec::new();
        if a < b {
            self.each_open(a, b, |lo, hi| out.push((lo, hi)))?;
        }
        Ok(out)
    }

    pub fn intervals_on(&mut self, day: NaiveDate) -> Answer<Vec<Interval>> {
        Ok(self.intervals_of_day(day)?.clone())
    }

    // --- internals -----------------------------------------------------------------------------

    fn each_open(&mut self, a: i64, b: i64, mut visit: impl FnMut(i64, i64)) -> Answer<()> {
        let mut day = self.local_date(a);
        let last = self.local_date(b).succ_opt().unwrap_or(NaiveDate::MAX);
        while day <= last {
            for &(open, close) in self.intervals_of_day(day)?.iter() {
                let (lo, hi) = (open.max(a), close.min(b));
                if lo < hi {
                    visit(lo, hi);
                }
            }
            day = next_date(day)?;
        }
        Ok(())
    }

    /// (business day, open, close) of the first interval closing after `t`.
    fn first_interval_from(&mut self, t: i64) -> Answer<(NaiveDate, i64, i64)> {
        let mut day = self.local_date(t);
        for _ in 0..SEARCH_HORIZON_DAYS {
            for &(open, close) in self.intervals_of_day(day)?.iter() {
                if close > t {
                    return Ok((day, open, close));
                }
            }
            day = next_date(day)?;
        }
        Err(CalendarError::BeyondHorizon)
    }

    fn intervals_of_day(&mut self, day: NaiveDate) -> Answer<&Vec<Interval>> {
        if !self.days.contains_key(&day) {
            let computed = self.compute_intervals_of_day(day)?;
            if self.days.len() >= CACHED_DAYS {
                self.days.clear();
            }
            self.days.insert(day, computed);
        }
        Ok(&self.days[&day])
    }

    fn compute_intervals_of_day(&self, day: NaiveDate) -> Answer<Vec<Interval>> {
        let closed = self
            .closed
            .get(&day.year())
            .ok_or(CalendarError::NeedYear(day.year()))?;
        if closed.contains(&day) {
            return Ok(Vec::new());
        }
        let weekly = &self.weekly[day.weekday().num_days_from_monday() as usize];
        let spans = match self.partial.get(&day) {
            Some(closures) => subtract(weekly, closures),
            None => weekly.clone(),
        };
        let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
        let mut out: Vec<Interval> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            let open = self.wall_to_utc(midnight + Duration::seconds(start));
            let close = self.wall_to_utc(midnight + Duration::seconds(end));
            if open >= close {
                continue; // the whole range was skipped by a spring-forward transition
            }
            match out.last_mut() {
                Some(last) if open <= last.1 => last.1 = last.1.max(close),
                _ => out.push((open, close)),
            }
        }
        Ok(out)
    }

    fn local(&self, t: i64) -> DateTime<Tz> {
        self.tz.from_utc_datetime(&utc_naive(t))
    }

    fn local_date(&self, t: i64) -> NaiveDate {
        self.local(t).date_naive()
    }

    fn wall(&self, t: i64) -> NaiveDateTime {
        self.local(t).naive_local()
    }

    fn offset_seconds(&self, t: i64) -> i64 {
        i64::from(self.local(t).offset().fix().local_minus_utc())
    }

    /// The first instant at which the local clock reads `wall` or later.
    fn wall_to_utc(&self, wall: NaiveDateTime) -> i64 {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => t.timestamp_micros(),
            // A repeated wall time means its first occurrence.
            LocalResult::Ambiguous(a, b) => a.timestamp_micros().min(b.timestamp_micros()),
            LocalResult::None => {
                // Skipped: the offsets either side of the transition give the two readings of
                // `wall`, which straddle the transition instant, the answer.
                let naive = wall.and_utc().timestamp_micros();
                let before = naive - self.offset_seconds(naive - 30 * 3600 * US) * US;
                let after = naive - self.offset_seconds(naive + 30 * 3600 * US) * US;
                let (early, late) = (before.min(after), before.max(after));
                first_second(early, late, |u| self.wall(u) >= wall)
            }
        }
    }

    /// The latest wall time whose first instant is not after `t`: t's wall time, except in the
    /// second pass of a repeated (fall-back) hour, where it is the end of the repeated stretch.
    fn wall_reached(&self, t: i64) -> NaiveDateTime {
        let wall = self.wall(t);
        if !self.second_pass(t) {
            return wall;
        }
        let first = self.wall_to_utc(wall);
        let repeat = t - first; // the same wall time's first occurrence, before the switch
        let switch = first_second(t - repeat, t, |u| self.second_pass(u));
        self.wall(switch) + Duration::microseconds(repeat)
    }

    /// Whether `t` reads a wall time the clock already showed (Python's `fold == 1`): its wall
    /// time is repeated and `t` is the later of its two instants.
    fn second_pass(&self, t: i64) -> bool {
        match self.tz.from_local_datetime(&self.wall(t)) {
            LocalResult::Ambiguous(a, b) => {
                t == a.timestamp_micros().max(b.timestamp_micros())
                    && a.timestamp_micros() != b.timestamp_micros()
            }
            _ => false,
        }
    }
}

fn next_date(day: NaiveDate) -> Answer<NaiveDate> {
    // Python's dates end with 9999-12-31: past it there is no answer, as there.
    if day.year() >= 9999 && day.month() == 12 && day.day() == 31 {
        return Err(CalendarError::BeyondHorizon);
    }
    day.succ_opt().ok_or(CalendarError::BeyondHorizon)
}

fn utc_naive(t: i64) -> NaiveDateTime {
    DateTime::from_timestamp_micros(t)
        .expect("instant in chrono's range")
        .naive_utc()
}

/// The first whole second in (lo, hi] where `reached` holds; it must not hold at lo.
fn first_second(lo: i64, hi: i64, reached: impl Fn(i64) -> bool) -> i64 {
    let mut low = lo.div_euclid(US);
    let mut high = -((-hi).div_euclid(US)); // ceiling
    while high - low > 1 {
        let middle = (low + high).div_euclid(2);
        if reached(middle * US) {
            high = middle;
        } else {
            low = middle;
        }
    }
    high * US
}

fn subtract(spans: &[Span], closed: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    for &(start, end) in spans {
        let mut pieces = vec![(start, end)];
        for &(c_start, c_end) in closed {
            pieces = pieces
                .into_iter()
                .flat_map(|(s, e)| [(s, e.min(c_start)), (s.max(c_end), e)])
                .filter(|(s, e)| s < e)
                .collect();
        }
        out.extend(pieces);
    }
    out
}

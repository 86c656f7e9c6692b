//! gapwatch's compiled scoring engine, imported from Python as `gapwatch_engine`.
//!
//! Python keeps the contracts, configuration, services and CLI; the per-event work moves here
//! piece by piece, each piece held to the Python reference by differential tests
//! (`tests/unit/test_engine_parity.py`). Piece one: business-calendar arithmetic.

mod calendar;

use std::collections::{HashMap, HashSet};

use chrono::NaiveDate;
use chrono_tz::Tz;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use calendar::{Answer, Calendar, CalendarError, Interval, Span, SEARCH_HORIZON_DAYS};

create_exception!(
    gapwatch_engine,
    BeyondHorizon,
    PyValueError,
    "No answer within SEARCH_HORIZON_DAYS local days."
);

/// Business-time arithmetic on one calendar, instants as microseconds since the epoch (UTC).
///
/// `closed_of_year(year)` returns the proleptic ordinals (`date.toordinal()`) of the year's
/// closed dates; it is asked once per year the calendar meets.
#[pyclass(module = "gapwatch_engine", name = "Calendar")]
struct PyCalendar {
    inner: Calendar,
    closed_of_year: Py<PyAny>,
}

fn date_of(ordinal: i32) -> PyResult<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(ordinal)
        .ok_or_else(|| PyValueError::new_err(format!("date ordinal {ordinal} out of range")))
}

#[pymethods]
impl PyCalendar {
    #[new]
    fn new(
        timezone: &str,
        weekly: Vec<Vec<Span>>,
        partial: HashMap<i32, Vec<Span>>,
        closed_of_year: Py<PyAny>,
    ) -> PyResult<Self> {
        let tz: Tz = timezone
            .parse()
            .map_err(|_| PyValueError::new_err(format!("unknown timezone {timezone:?}")))?;
        let weekly: [Vec<Span>; 7] = weekly
            .try_into()
            .map_err(|_| PyValueError::new_err("weekly must hold 7 days, Monday first"))?;
        let mut closures = HashMap::new();
        for (ordinal, spans) in partial {
            closures.insert(date_of(ordinal)?, spans);
        }
        Ok(PyCalendar {
            inner: Calendar::new(tz, weekly, closures),
            closed_of_year,
        })
    }

    fn is_open(&mut self, py: Python<'_>, t: i64) -> PyResult<bool> {
        self.ask(py, |c| c.is_open(t))
    }

    fn next_open(&mut self, py: Python<'_>, t: i64) -> PyResult<i64> {
        self.ask(py, |c| c.next_open(t))
    }

    /// The first instant at which `duration` business microseconds have elapsed since `start`.
    fn add_business(&mut self, py: Python<'_>, start: i64, duration: i64) -> PyResult<i64> {
        self.ask(py, |c| c.add_business(start, duration))
    }

    fn add_business_days(&mut self, py: Python<'_>, start: i64, days: u32) -> PyResult<i64> {
        self.ask(py, |c| c.add_business_days(start, days))
    }

    /// Business microseconds from `a` to `b`; negative if `b` is before `a`.
    fn business_between(&mut self, py: Python<'_>, a: i64, b: i64) -> PyResult<i64> {
        self.ask(py, |c| c.business_between(a, b))
    }

    fn open_intervals(&mut self, py: Python<'_>, a: i64, b: i64) -> PyResult<Vec<Interval>> {
        self.ask(py, |c| c.open_intervals(a, b))
    }

    fn intervals_on(&mut self, py: Python<'_>, ordinal: i32) -> PyResult<Vec<Interval>> {
        let day = date_of(ordinal)?;
        self.ask(py, |c| c.intervals_on(day))
    }
}

impl PyCalendar {
    /// Answers `question`, handing the calendar each year of closed dates it asks for.
    fn ask<T>(
        &mut self,
        py: Python<'_>,
        mut question: impl FnMut(&mut Calendar) -> Answer<T>,
    ) -> PyResult<T> {
        loop {
            match question(&mut self.inner) {
                Ok(answer) => return Ok(answer),
                Err(CalendarError::BeyondHorizon) => {
                    return Err(BeyondHorizon::new_err("beyond_horizon"))
                }
                Err(CalendarError::NeedYear(year)) => {
                    let ordinals: Vec<i32> =
                        self.closed_of_year.bind(py).call1((year,))?.extract()?;
                    let dates = ordinals
                        .into_iter()
                        .map(date_of)
                        .collect::<PyResult<HashSet<_>>>()?;
                    self.inner.add_closed_year(year, dates);
                }
            }
        }
    }
}

#[pymodule]
fn gapwatch_engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCalendar>()?;
    m.add("BeyondHorizon", m.py().get_type::<BeyondHorizon>())?;
    m.add("SEARCH_HORIZON_DAYS", SEARCH_HORIZON_DAYS)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

"""Whole-history totals per period, segment and promise kind: what replay reports beside windows.

Pure core: no I/O. `Totals` is fed the gap events as the scoring core produces them (`observe`)
and counts each one exactly as `RollingWindows` does (the same counts, the same DDSketch bins,
the same gap buckets for CSAT), but into series that never expire: one per (segment, promise
kind) over the whole input, and one per (period, segment, promise kind), the period being the
UTC calendar month (or ISO week, Monday first) holding the event's `outcome_at`. So a 7-day
input gives in its whole-history series the figures of the 7d window, and a quarter re-scored
after a policy change gives the quarter's figures and each month's.

Memory is bounded by segments x kinds x periods (the keyer caps segments, `other` takes the
rest), plus the breaches of the last `correction_horizon_seconds` of event time that a late
correction may still take back; never by the number of events.

Corrections follow the windows' rule: a `met` with `corrects` takes its breach back (breached
-1, its promised seconds out) in the series where the breach was counted, if the breach is
within the horizon; a correction seen before its breach waits for it as long.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from gapwatch.core.gaps import GapData, Outcome
from gapwatch.core.promises import PromiseKind

# The windows' own counting: the same count slots, bin codes and sketches, so the totals agree
# with the live figures bin for bin. Private to windows.py, shared deliberately (read-only).
from gapwatch.core.windows import (
    _AT_RISK_DELTAS,
    _BREACHED_DELTAS,
    _CANCELLED_DELTAS,
    _CSAT_GAP,
    _CSAT_N,
    _CSAT_SUM,
    _DELIVERED_LATE_DELTAS,
    _EVENTS,
    _FTF_DELTAS,
    _GAP_BUCKETS,
    _MET_DELTAS,
    _NPS_DETRACTORS,
    _NPS_N,
    _NPS_PROMOTERS,
    DEFAULT_ON_TIME_SHARE,
    CsatBucket,
    SegmentKey,
    SegmentKeyer,
    _codes,
    _Deltas,
    _Total,
    figures_dict,
    gap_bucket,
    total_figures,
)

__all__ = ["Period", "PeriodFigures", "Totals", "period_bounds", "period_name"]


class Period(StrEnum):
    """The calendar period of the per-period totals, in UTC."""

    MONTH = "month"
    WEEK = "week"


def period_bounds(t: datetime, period: Period) -> tuple[datetime, datetime]:
    """[start, end) of the UTC calendar month, or ISO week (Monday 00:00), holding `t`."""
    t = t.astimezone(UTC)
    if period is Period.MONTH:
        start = datetime(t.year, t.month, 1, tzinfo=UTC)
        if t.month == 12:
            return start, datetime(t.year + 1, 1, 1, tzinfo=UTC)
        return start, datetime(t.year, t.month + 1, 1, tzinfo=UTC)
    day = datetime(t.year, t.month, t.day, tzinfo=UTC) - timedelta(days=t.weekday())
    return day, day + timedelta(days=7)


def period_name(start: datetime, period: Period) -> str:
    """`2026-03` for a month, `2026-W10` for an ISO week."""
    if period is Period.MONTH:
        return f"{start.year:04d}-{start.month:02d}"
    iso = start.isocalendar()
    return f"{iso.year:04d}-W{iso.week:02d}"


@dataclass(frozen=True, slots=True)
class PeriodFigures:
    """Figures of one (segment, promise kind) over a period, or over the whole input
    (`period` None). The fields mean what `WindowFigures`' do."""

    period: str | None
    start: datetime | None
    end: datetime | None
    segment: dict[str, str]
    promise_kind: PromiseKind | None
    events: int
    met: int
    breached: int
    delivered_late: int
    at_risk: int
    cancelled: int
    attainment: float | None
    gap_p50: float | None
    gap_p90: float | None
    gap_p99: float | None
    promised_p50: float | None
    promised_p90: float | None
    delivered_p50: float | None
    delivered_p90: float | None
    csat_mean: float | None
    csat_count: int
    nps: float | None
    nps_count: int
    csat_by_gap_bucket: dict[str, CsatBucket]
    ftf_rate: float | None
    ftf_count: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly; the period's bounds are left to the enclosing period entry."""
        return {
            "segment": dict(self.segment),
            "promise_kind": None if self.promise_kind is None else self.promise_kind.value,
            "events": self.events,
            **figures_dict(self),
        }


_Key = tuple[datetime | None, SegmentKey, PromiseKind | None]
"""(period start, or None for the whole input; segment; promise kind, None for first-time fix)."""
_BreachKey = tuple[str, PromiseKind, int, int]
_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Totals:
    """Counts and sketch bins per (period, segment, promise kind) over a whole input."""

    def __init__(
        self,
        keyer: SegmentKeyer,
        period: Period = Period.MONTH,
        *,
        on_time_tolerance_seconds: float = 0.0,
        on_time_share: float = DEFAULT_ON_TIME_SHARE,
        correction_horizon_seconds: float = 86_400.0,
    ) -> None:
        self.keyer = keyer
        self.period = period
        self.on_time_tolerance_seconds = float(on_time_tolerance_seconds)
        self.on_time_share = float(on_time_share)
        self._horizon = timedelta(seconds=correction_horizon_seconds)
        self._totals: dict[_Key, _Total] = {}
        self._ends: dict[datetime, datetime] = {}
        # The period the last event fell in: most events fall in the one before them.
        self._span: tuple[datetime, datetime] | None = None
        self._breaches: dict[_BreachKey, tuple[datetime, SegmentKey, datetime, tuple[int, ...]]]
        self._breaches = {}
        self._early_corrections: dict[_BreachKey, datetime] = {}
        self._watermark: datetime | None = None
        self._pruned: datetime | None = None

    @property
    def series_count(self) -> int:
        return len(self._totals)

    @property
    def remembered_breaches(self) -> int:
        """Breaches a correction may still take back: bounded by the horizon, not the input."""
        return len(self._breaches)

    # --- input ---------------------------------------------------------------------------------

    def observe(self, event: GapData) -> None:
        """Count one gap event; a job completion (`fixed` set, not a correction) also counts
        for first-time fix, as the scoring core does for the windows."""
        at = event.outcome_at
        self._advance(at)
        start = self._period_of(at)
        segment = self.keyer.key(event.segment)
        if event.fixed is not None and event.corrects is None:
            fixed = event.fixed and not event.revisit
            self._add(start, segment, None, _FTF_DELTAS[fixed], ())
        outcome = event.outcome
        codes: tuple[int, ...] = ()
        if outcome is Outcome.MET:
            deltas = _MET_DELTAS
            codes = _codes(event.gap_seconds, event.promised_seconds, event.delivered_seconds)
        elif outcome is Outcome.BREACHED:
            breach: _BreachKey = (event.item_id, event.promise_kind, event.cycle, event.round)
            assert self._watermark is not None
            correctable = at >= self._watermark - self._horizon
            if correctable and self._early_corrections.pop(breach, None) is not None:
                return  # taken back already by its correction
            deltas = _BREACHED_DELTAS
            codes = _codes(None, event.promised_seconds, None)
            if correctable:
                self._breaches[breach] = (start, segment, at, codes)
        elif outcome is Outcome.DELIVERED_LATE:
            deltas = _DELIVERED_LATE_DELTAS
            codes = _codes(event.gap_seconds, None, event.delivered_seconds)
        elif outcome is Outcome.AT_RISK:
            deltas = _AT_RISK_DELTAS
        elif outcome is Outcome.CANCELLED:
            deltas = _CANCELLED_DELTAS
        else:
            built = self._feedback_deltas(event)
            if built is None:
                return
            deltas = built
        self._add(start, segment, event.promise_kind, deltas, codes)
        if outcome is Outcome.MET and event.corrects is not None:
            self._take_back((event.item_id, event.promise_kind, event.cycle, event.round), at)

    def _feedback_deltas(self, event: GapData) -> _Deltas | None:
        feedback = event.feedback
        if feedback is None:
            return None  # the windows leave it out too (NO_FEEDBACK)
        built: list[tuple[int, int]] = [(_EVENTS, 1)]
        if feedback.csat is not None:
            where = _GAP_BUCKETS.index(
                gap_bucket(
                    event.gap_seconds,
                    event.arrival,
                    self.on_time_tolerance_seconds,
                    event.promised_seconds,
                    self.on_time_share,
                )
            )
            built += [
                (_CSAT_SUM, feedback.csat),
                (_CSAT_N, 1),
                (_CSAT_GAP + 2 * where, feedback.csat),
                (_CSAT_GAP + 2 * where + 1, 1),
            ]
        if feedback.nps is not None:
            built.append((_NPS_N, 1))
            if feedback.nps >= 9:
                built.append((_NPS_PROMOTERS, 1))
            elif feedback.nps <= 6:
                built.append((_NPS_DETRACTORS, 1))
        return tuple(built)

    def _add(
        self,
        start: datetime,
        segment: SegmentKey,
        kind: PromiseKind | None,
        deltas: _Deltas,
        codes: tuple[int, ...],
    ) -> None:
        for key in ((None, segment, kind), (start, segment, kind)):
            total = self._totals.get(key)
            if total is None:
                total = self._totals[key] = _Total()
            total.add(deltas, codes)

    def _take_back(self, breach: _BreachKey, at: datetime) -> None:
        found = self._breaches.pop(breach, None)
        if found is None:
            self._early_corrections[breach] = at
            return
        start, segment, _, codes = found
        for key in ((None, segment, breach[1]), (start, segment, breach[1])):
            self._totals[key].remove(_BREACHED_DELTAS, codes)

    def _period_of(self, at: datetime) -> datetime:
        span = self._span
        if span is None or not span[0] <= at < span[1]:
            span = self._span = period_bounds(at, self.period)
            self._ends[span[0]] = span[1]
        return span[0]

    def _advance(self, at: datetime) -> None:
        if self._watermark is not None and at <= self._watermark:
            return
        self._watermark = at
        # Forget what no correction can reach any more, at most once an hour of event time.
        if self._pruned is None or at - self._pruned >= timedelta(hours=1):
            self._pruned = at
            horizon = at - self._horizon
            self._breaches = {k: v for k, v in self._breaches.items() if v[2] >= horizon}
            self._early_corrections = {
                k: t for k, t in self._early_corrections.items() if t >= horizon
            }

    # --- output --------------------------------------------------------------------------------

    def whole(self) -> list[PeriodFigures]:
        """Figures over the whole input, per (segment, kind); ordered by segment, then kind."""
        return [self._figures(k, t) for k, t in self._sorted() if k[0] is None]

    def periods(self) -> list[PeriodFigures]:
        """Figures per (period, segment, kind), oldest period first."""
        return [self._figures(k, t) for k, t in self._sorted() if k[0] is not None]

    def as_dict(self) -> dict[str, Any]:
        by_period: dict[str, dict[str, Any]] = {}
        for figures in self.periods():
            assert figures.period is not None and figures.start is not None
            assert figures.end is not None
            entry = by_period.setdefault(
                figures.period,
                {
                    "period": figures.period,
                    "start": _iso(figures.start),
                    "end": _iso(figures.end),
                    "series": [],
                },
            )
            entry["series"].append(figures.as_dict())
        return {
            "period": self.period.value,
            "whole": [f.as_dict() for f in self.whole()],
            "periods": list(by_period.values()),
        }

    def _sorted(self) -> list[tuple[_Key, _Total]]:
        def order(item: tuple[_Key, _Total]) -> Any:
            (start, segment, kind), _ = item
            return (start is not None, start or _EPOCH, segment, kind or "")

        return sorted(self._totals.items(), key=order)

    def _figures(self, key: _Key, total: _Total) -> PeriodFigures:
        start, segment, kind = key
        return PeriodFigures(
            period=None if start is None else period_name(start, self.period),
            start=start,
            end=None if start is None else self._ends[start],
            segment=dict(segment),
            promise_kind=kind,
            events=total.counts[_EVENTS],
            **total_figures(total),
        )


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")

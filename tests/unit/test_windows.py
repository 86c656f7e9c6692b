"""Rolling windows: hand-computed figures, window edges, late events, segments, state, laws."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ddsketch import DDSketch
from hypothesis import given, settings
from hypothesis import strategies as st

from gapwatch.core.feedback import ItemKind
from gapwatch.core.gaps import ArrivalOutcome, FeedbackJoin, GapData, Outcome
from gapwatch.core.promises import PromiseKind
from gapwatch.core.windows import (
    WINDOWS,
    GapBucket,
    ObserveResult,
    RollingWindows,
    SegmentKeyer,
    WindowFigures,
    WindowStateError,
    gap_bucket,
)

# 12:00 UTC is a multiple of every bucket width (10 s, 1 min, 15 min, 2 h) since the epoch.
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
S = timedelta(seconds=1)
MIN = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)
FR = PromiseKind.FIRST_RESPONSE
RES = PromiseKind.RESOLUTION
SEG_A = {"team": "a", "region": "eu"}
WINDOW_NAMES = [w.name for w in WINDOWS]


def ev(
    outcome: Outcome,
    at: datetime,
    *,
    item: str = "T-1",
    kind: PromiseKind = FR,
    segment: dict[str, str] | None = None,
    gap: float | None = None,
    promised: float = 3600.0,
    delivered: float | None = None,
    arrival: ArrivalOutcome | None = None,
    csat: int | None = None,
    nps: int | None = None,
    no_feedback: bool = False,
    corrects: str | None = None,
    cycle: int = 0,
) -> GapData:
    feedback = None
    if outcome is Outcome.FEEDBACK and not no_feedback:
        feedback = FeedbackJoin(
            feedback_id=f"F-{item}",
            feedback_event_id=f"fe-{item}",
            submitted_at=at,
            csat=csat,
            nps=nps,
        )
    due = at if gap is None else at - timedelta(seconds=gap)
    return GapData(
        item_id=item,
        item_kind=ItemKind.TICKET,
        promise_kind=kind,
        cycle=cycle,
        segment=dict(SEG_A if segment is None else segment),
        outcome=outcome,
        outcome_at=at,
        started_at=due - timedelta(seconds=promised),
        promised_at=due,
        original_promised_at=due,
        delivered_at=None if delivered is None else at,
        gap_seconds=gap,
        promised_seconds=promised,
        delivered_seconds=delivered,
        arrival=arrival,
        caused_by=f"in-{item}-{outcome.value}",
        corrects=corrects,
        feedback=feedback,
    )


def new(watermark: datetime = T0, **kwargs: Any) -> RollingWindows:
    return RollingWindows(SegmentKeyer(["team", "region"], cap=10), watermark, **kwargs)


def by_window(figures: Sequence[WindowFigures], kind: PromiseKind | None = FR) -> dict[str, Any]:
    return {f.window: f for f in figures if f.promise_kind == kind}


def exact_quantile(values: Sequence[float], q: float) -> float:
    """The value DDSketch approximates: the sorted value at rank floor(q * (n - 1))."""
    return sorted(values)[math.floor(q * (len(values) - 1))]


def close(estimate: float | None, exact: float) -> bool:
    return estimate is not None and abs(estimate - exact) <= 0.01 * abs(exact) + 1e-9


# --- gap buckets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gap", "arrival", "tolerance", "expected"),
    [
        (-0.001, None, 0.0, GapBucket.EARLY),
        (0.0, None, 0.0, GapBucket.ON_TIME),
        (-60.0, None, 60.0, GapBucket.ON_TIME),
        (-60.001, None, 60.0, GapBucket.EARLY),
        (0.001, None, 0.0, GapBucket.LATE_LT_15M),
        (899.999, None, 0.0, GapBucket.LATE_LT_15M),
        (900.0, None, 0.0, GapBucket.LATE_15_60M),
        (3600.0, None, 0.0, GapBucket.LATE_15_60M),
        (3600.001, None, 0.0, GapBucket.LATE_GT_1H),
        (None, None, 0.0, GapBucket.UNKNOWN),
        # Arrival inside the window: negative gap to the window end, yet on time.
        (-5400.0, ArrivalOutcome.ON_TIME, 0.0, GapBucket.ON_TIME),
        (None, ArrivalOutcome.EARLY, 0.0, GapBucket.EARLY),
        (1200.0, ArrivalOutcome.LATE, 0.0, GapBucket.LATE_15_60M),
        (None, ArrivalOutcome.LATE, 0.0, GapBucket.UNKNOWN),
    ],
)
def test_gap_buckets(
    gap: float | None, arrival: ArrivalOutcome | None, tolerance: float, expected: GapBucket
) -> None:
    assert gap_bucket(gap, arrival, tolerance) is expected


# --- segments ---------------------------------------------------------------------------------


def test_segment_key_is_ordered_pairs_with_none_for_missing_labels() -> None:
    keyer = SegmentKeyer(["team", "region", "priority"], cap=5)
    key = keyer.key({"region": "eu", "team": "a", "channel": "email"})
    assert key == (("team", "a"), ("region", "eu"), ("priority", "none"))
    assert keyer.key({"team": "a", "region": "eu"}) is key


def test_segment_cap_sends_new_segments_to_other_and_keeps_admitted_ones() -> None:
    keyer = SegmentKeyer(["team"], cap=2)
    a, b = keyer.key({"team": "a"}), keyer.key({"team": "b"})
    assert keyer.key({"team": "c"}) == keyer.other == (("team", "other"),)
    assert keyer.key({"team": "a"}) == a and keyer.key({"team": "b"}) == b
    assert keyer.key({"team": "d"}) == keyer.other
    assert keyer.admitted == (a, b)


def test_a_team_named_other_is_its_own_segment_never_the_overflow() -> None:
    keyer = SegmentKeyer(["team", "region"], cap=3)
    literal = keyer.key({"team": "other", "region": "other"})
    assert literal == (("team", "other_"), ("region", "other_")) != keyer.other
    assert keyer.key({"team": "none"}) == (("team", "none_"), ("region", "none"))
    assert keyer.key({"team": "other_", "region": "x"}) == (("team", "other__"), ("region", "x"))
    assert keyer.key({"team": "overflowing"}) == keyer.other
    restored = SegmentKeyer.from_dict(json.loads(json.dumps(keyer.to_dict())))
    assert restored.key({"team": "other", "region": "other"}) == literal
    assert set(restored.admitted) == set(keyer.admitted)


@pytest.mark.parametrize("value", ["others", "_other", "nones", "Other", "other_x", "no_ne"])
def test_values_that_only_resemble_the_reserved_words_stay_as_they_are(value: str) -> None:
    assert SegmentKeyer(["team"], cap=1).key({"team": value}) == (("team", value),)


def test_segment_keyer_round_trips_and_carries_on() -> None:
    keyer = SegmentKeyer(["team", "region"], cap=2)
    keyer.key({"team": "b", "region": "us"})
    keyer.key({"team": "a"})
    restored = SegmentKeyer.from_dict(json.loads(json.dumps(keyer.to_dict())))
    assert set(restored.admitted) == set(keyer.admitted)
    assert restored.key({"team": "a"}) == (("team", "a"), ("region", "none"))
    assert restored.key({"team": "z"}) == restored.other


def test_segment_keyer_refuses_bad_config() -> None:
    with pytest.raises(WindowStateError, match="duplicate_label"):
        SegmentKeyer(["team", "team"], cap=1)
    with pytest.raises(WindowStateError, match="bad_cap"):
        SegmentKeyer(["team"], cap=-1)
    assert SegmentKeyer(["team"], cap=0).key({"team": "a"}) == (("team", "other"),)


def test_segments_over_the_cap_are_counted_in_other() -> None:
    windows = RollingWindows(SegmentKeyer(["team"], cap=1), T0)
    for team in ("a", "b", "c"):
        windows.observe(ev(Outcome.MET, T0, segment={"team": team}, gap=-1.0))
    met = {(tuple(f.segment.items()), f.window): f.met for f in windows.snapshot(T0)}
    assert met[(("team", "a"),), "5m"] == 1
    assert met[(("team", "other"),), "5m"] == 2
    assert len(met) == 2 * len(WINDOWS)


# --- hand-computed figures --------------------------------------------------------------------


def test_counts_attainment_and_quantiles() -> None:
    windows = new()
    at = T0 - 30 * S
    events = [
        ev(Outcome.MET, at, item="T-1", gap=-60.0, promised=900.0, delivered=840.0),
        ev(Outcome.MET, at, item="T-2", gap=-30.0, promised=1800.0, delivered=1770.0),
        ev(Outcome.MET, at, item="T-3", gap=0.0, promised=3600.0, delivered=3600.0),
        ev(Outcome.BREACHED, at, item="T-4", promised=7200.0),
        ev(Outcome.DELIVERED_LATE, at, item="T-4", gap=600.0, promised=7200.0, delivered=7800.0),
        ev(Outcome.AT_RISK, at, item="T-5"),
        ev(Outcome.CANCELLED, at, item="T-6"),
    ]
    assert [windows.observe(e) for e in events] == [ObserveResult.COUNTED] * len(events)
    figures = by_window(windows.snapshot(T0))
    assert list(figures) == WINDOW_NAMES
    f = figures["5m"]
    assert (f.met, f.breached, f.delivered_late, f.at_risk, f.cancelled) == (3, 1, 1, 1, 1)
    assert f.attainment == 0.75
    assert f.segment == SEG_A and f.promise_kind is FR and f.window_seconds == 300
    assert f.as_of == T0
    # gaps [-60, -30, 0, 600]: ranks 1.5, 2.7, 2.97 -> sorted[1], sorted[2], sorted[2]
    assert close(f.gap_p50, -30.0) and f.gap_p90 == 0 and f.gap_p99 == 0
    # promised [900, 1800, 3600, 7200] (the late delivery adds none)
    # delivered [840, 1770, 3600, 7800] (the breach adds none)
    assert close(f.promised_p50, 1800.0) and close(f.promised_p90, 3600.0)
    assert close(f.delivered_p50, 1770.0) and close(f.delivered_p90, 3600.0)
    assert f.latest_breached == ("T-4",)
    assert f.csat_mean is None and f.csat_count == 0 and f.nps is None and f.ftf_rate is None
    for name in WINDOW_NAMES:  # all 30 s old: the same in every window
        g = figures[name]
        assert (g.met, g.breached, g.gap_p50, g.latest_breached) == (3, 1, f.gap_p50, ("T-4",))


def test_attainment_is_none_without_met_or_breached() -> None:
    windows = new()
    windows.observe(ev(Outcome.AT_RISK, T0))
    (f, *_) = windows.snapshot(T0)
    assert f.attainment is None and f.at_risk == 1 and f.gap_p50 is None


def test_quantiles_match_exact_values_within_one_percent() -> None:
    windows = new()
    gaps = [float(g) for g in range(-3000, 9001, 37)]
    delivered = [5000.0 + 3 * i for i in range(len(gaps))]
    for i, gap in enumerate(gaps):
        outcome = Outcome.MET if gap <= 0 else Outcome.DELIVERED_LATE
        windows.observe(ev(outcome, T0, item=f"T-{i}", gap=gap, delivered=delivered[i]))
    f = by_window(windows.snapshot(T0))["1h"]
    for q, got in ((0.5, f.gap_p50), (0.9, f.gap_p90), (0.99, f.gap_p99)):
        assert close(got, exact_quantile(gaps, q)), (q, got)
    assert close(f.delivered_p50, exact_quantile(delivered, 0.5))
    assert close(f.delivered_p90, exact_quantile(delivered, 0.9))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(-1e7, 1e7, allow_nan=False) | st.sampled_from([0.0, 1e-300, -1e-300]),
        min_size=1,
        max_size=40,
    )
)
def test_quantiles_are_exactly_what_a_ddsketch_of_the_values_says(gaps: list[float]) -> None:
    windows = new()
    reference = DDSketch(0.01)
    for i, gap in enumerate(gaps):
        windows.observe(ev(Outcome.DELIVERED_LATE, T0, item=f"T-{i}", gap=gap))
        reference.add(gap)
    f = by_window(windows.snapshot(T0))["7d"]
    assert [f.gap_p50, f.gap_p90, f.gap_p99] == [
        reference.get_quantile_value(q) for q in (0.5, 0.9, 0.99)
    ]


def test_non_finite_durations_stay_out_of_the_sketches() -> None:
    windows = new()
    data = ev(Outcome.MET, T0, gap=-1.0).model_dump()
    data.update(gap_seconds=-math.inf, delivered_seconds=math.nan)  # the contract lets them in
    windows.observe(GapData.model_validate(data))
    f = by_window(windows.snapshot(T0))["5m"]
    assert f.met == 1 and f.gap_p50 is None and f.delivered_p50 is None
    assert close(f.promised_p50, 3600.0)


def test_on_time_holds_deliveries_within_the_share_and_early_the_rest() -> None:
    """Issue 20: gap < 0 was `early` and only gap == 0 `on_time`, so for tickets `on_time` was
    always empty and the cost-of-lateness baseline showed nothing. With the default share
    (half the promised time), the last half before the due time is on time."""
    windows = new()
    for i, gap in enumerate((-2000.0, -1800.0, -600.0, 0.0, 60.0)):
        event = ev(Outcome.FEEDBACK, T0, item=f"S-{i}", gap=gap, promised=3600.0, csat=4, nps=9)
        windows.observe(event)
    buckets = by_window(windows.snapshot(T0))["5m"].csat_by_gap_bucket
    assert (buckets["early"].count, buckets["on_time"].count) == (1, 3)
    assert buckets["late_lt_15m"].count == 1
    with pytest.raises(WindowStateError):
        new(on_time_share=1.5)


def test_csat_nps_and_csat_by_gap_bucket() -> None:
    windows = new(on_time_tolerance_seconds=120.0, on_time_share=0.0)
    feedback = [
        (-600.0, None, 5, 10),  # early
        (-60.0, None, 4, 9),  # on time thanks to the tolerance
        (0.0, None, 5, 8),  # on time
        (300.0, None, 3, 7),  # late < 15 min
        (1800.0, None, 2, 6),  # late 15-60 min
        (7200.0, None, 1, 0),  # late > 1 h
        (None, None, 3, None),  # no gap known: unknown
        (None, ArrivalOutcome.ON_TIME, None, 10),  # NPS only: no CSAT bucket
    ]
    for i, (gap, arrival, csat, nps) in enumerate(feedback):
        event = ev(
            Outcome.FEEDBACK, T0, item=f"T-{i}", gap=gap, arrival=arrival, csat=csat, nps=nps
        )
        assert windows.observe(event) is ObserveResult.COUNTED
    f = by_window(windows.snapshot(T0))["5m"]
    assert f.csat_count == 7 and f.csat_mean == pytest.approx(23 / 7)
    # NPS answers [10, 9, 8, 7, 6, 0, 10]: 3 promoters, 2 detractors of 7
    assert f.nps_count == 7 and f.nps == pytest.approx(100 * (3 - 2) / 7)
    buckets = {name: (b.mean, b.count) for name, b in f.csat_by_gap_bucket.items()}
    assert buckets == {
        "early": (5.0, 1),
        "on_time": (4.5, 2),
        "late_lt_15m": (3.0, 1),
        "late_15_60m": (2.0, 1),
        "late_gt_1h": (1.0, 1),
        "unknown": (3.0, 1),
    }
    assert f.met == 0 and f.attainment is None and f.gap_p50 is None


def test_nps_of_promoters_and_detractors_only() -> None:
    windows = new()
    for i, score in enumerate([10, 10, 9, 3]):
        windows.observe(ev(Outcome.FEEDBACK, T0, item=f"T-{i}", nps=score))
    f = by_window(windows.snapshot(T0))["5m"]
    assert f.nps == 50.0 and f.nps_count == 4 and f.csat_count == 0


def test_feedback_event_without_feedback_is_not_counted() -> None:
    windows = new()
    assert windows.observe(ev(Outcome.FEEDBACK, T0, no_feedback=True)) is ObserveResult.NO_FEEDBACK
    assert windows.snapshot(T0) == []


def test_first_time_fix_rate() -> None:
    windows = new()
    for fixed, revisit in [(True, False), (True, False), (True, True), (False, False)]:
        result = windows.observe_job_completion(SEG_A, T0 - MIN, fixed=fixed, is_revisit=revisit)
        assert result is ObserveResult.COUNTED
    figures = by_window(windows.snapshot(T0), kind=None)
    assert list(figures) == WINDOW_NAMES
    f = figures["5m"]
    assert f.ftf_rate == 0.5 and f.ftf_count == 4 and f.segment == SEG_A
    assert f.met == 0 and f.attainment is None and f.latest_breached == ()


def test_figures_are_json_friendly() -> None:
    windows = new()
    windows.observe(ev(Outcome.MET, T0, gap=-5.0, delivered=100.0))
    windows.observe(ev(Outcome.FEEDBACK, T0, gap=-2000.0, csat=4, nps=9))
    data = json.loads(json.dumps(windows.snapshot(T0)[0].as_dict()))
    assert data["as_of"] == "2026-03-02T12:00:00Z"
    assert data["promise_kind"] == "first_response" and data["window"] == "5m"
    assert data["csat_by_gap_bucket"]["early"] == {"mean": 4.0, "count": 1}
    assert data["latest_breached"] == []


# --- window edges, expiry, late and future events ---------------------------------------------


@pytest.mark.parametrize(
    ("window", "start"),
    [
        ("5m", T0 - 290 * S),  # 30 buckets of 10 s ending with [12:00:00, 12:00:10)
        ("1h", T0 - 59 * MIN),
        ("24h", T0 - D + 15 * MIN),
        ("7d", T0 - 7 * D + 2 * H),
    ],
)
def test_window_starts_at_its_oldest_live_bucket(window: str, start: datetime) -> None:
    windows = new()
    windows.observe(ev(Outcome.MET, start, item="in", gap=-1.0))
    windows.observe(ev(Outcome.BREACHED, start - US, item="out"))
    f = by_window(windows.snapshot(T0))[window]
    assert (f.met, f.breached) == (1, 0)


def test_older_than_the_longest_window_is_too_late_and_counted() -> None:
    windows = new()
    assert windows.observe(ev(Outcome.MET, T0 - 7 * D + 2 * H - US)) is ObserveResult.TOO_LATE
    assert windows.observe(ev(Outcome.MET, T0 - 8 * D)) is ObserveResult.TOO_LATE
    late = windows.observe_job_completion(SEG_A, T0 - 8 * D, fixed=True, is_revisit=False)
    assert late is ObserveResult.TOO_LATE
    assert windows.too_late == 3 and windows.snapshot(T0) == []
    assert windows.keyer.admitted == ()  # a too-late event takes no segment slot


@pytest.mark.parametrize(("window", "lifetime"), [("5m", 300 * S), ("1h", H), ("24h", D)])
def test_buckets_expire_exactly_when_their_window_has_passed(
    window: str, lifetime: timedelta
) -> None:
    windows = new()
    windows.observe(ev(Outcome.MET, T0, gap=-1.0))
    assert by_window(windows.snapshot(T0 + lifetime - US))[window].met == 1
    assert window not in by_window(windows.snapshot(T0 + lifetime))


def test_everything_expires_after_seven_days() -> None:
    windows = new()
    windows.observe(ev(Outcome.BREACHED, T0))
    assert by_window(windows.snapshot(T0 + 7 * D - US))["7d"].latest_breached == ("T-1",)
    assert windows.snapshot(T0 + 7 * D) == []
    assert windows.series_count == 0


def test_late_events_within_windows_correct_them() -> None:
    windows = new()
    windows.observe(ev(Outcome.MET, T0 - 5 * S, item="now", gap=-1.0))
    windows.advance(T0 + 10 * S)
    # 40 minutes late: into its own 1h, 6h, 24h and 7d buckets, too old for the 5m and 30m windows
    result = windows.observe(ev(Outcome.BREACHED, T0 - 40 * MIN, item="late"))
    assert result is ObserveResult.COUNTED
    figures = by_window(windows.snapshot(T0 + 10 * S))
    assert (figures["5m"].met, figures["5m"].breached, figures["5m"].attainment) == (1, 0, 1.0)
    assert (figures["1h"].met, figures["1h"].breached, figures["1h"].attainment) == (1, 1, 0.5)
    assert figures["1h"].latest_breached == ("late",)
    assert figures["5m"].latest_breached == ()


def test_events_ahead_of_the_watermark_wait_for_it() -> None:
    windows = new()
    windows.observe(ev(Outcome.MET, T0 + MIN, gap=-1.0))
    figures = by_window(windows.snapshot(T0))
    # 12:01 is past the current 10 s, 30 s and 1 min buckets but inside the current 5 min,
    # 15 min and 2 h ones.
    assert list(figures) == ["6h", "24h", "7d"]
    assert list(by_window(windows.snapshot(T0 + MIN))) == WINDOW_NAMES


def test_watermark_never_moves_back() -> None:
    windows = new()
    windows.advance(T0 - H)
    assert windows.watermark == T0
    windows.observe(ev(Outcome.MET, T0 - 10 * S, gap=-1.0))
    assert by_window(windows.snapshot(T0 - H))["5m"].as_of == T0


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(WindowStateError, match="naive_datetime"):
        new(watermark=datetime(2026, 3, 2, 12))
    with pytest.raises(WindowStateError, match="naive_datetime"):
        new().advance(datetime(2026, 3, 2, 12))


# --- latest breached --------------------------------------------------------------------------


def test_latest_breached_is_bounded_newest_first_and_deduplicated() -> None:
    windows = new(latest_breached_limit=3)
    for i in range(5):
        windows.observe(ev(Outcome.BREACHED, T0 - (10 - i) * MIN, item=f"T-{i}"))
    windows.observe(ev(Outcome.BREACHED, T0 - 1 * MIN, item="T-1", cycle=1))  # after a reopen
    windows.observe(ev(Outcome.BREACHED, T0 - 20 * MIN, item="T-4", cycle=1))  # an older one
    figures = by_window(windows.snapshot(T0))
    assert figures["1h"].latest_breached == ("T-1", "T-4", "T-3")
    assert figures["1h"].breached == 7
    assert figures["5m"].latest_breached == ("T-1",)


def test_latest_breached_per_series() -> None:
    windows = new()
    windows.observe(ev(Outcome.BREACHED, T0, item="T-1", kind=FR))
    windows.observe(ev(Outcome.BREACHED, T0, item="T-2", kind=RES))
    windows.observe(ev(Outcome.BREACHED, T0, item="T-3", kind=FR, segment={"team": "b"}))
    latest = {(f.segment["team"], f.promise_kind): f.latest_breached for f in windows.snapshot(T0)}
    assert latest == {("a", FR): ("T-1",), ("a", RES): ("T-2",), ("b", FR): ("T-3",)}


# --- corrections ------------------------------------------------------------------------------


def breach_then_correction(windows: RollingWindows, correction_first: bool = False) -> None:
    breach = ev(Outcome.BREACHED, T0 - 10 * MIN, item="T-1", promised=3600.0)
    met = ev(
        Outcome.MET,
        T0 - 40 * MIN,
        item="T-1",
        gap=-1800.0,
        promised=3600.0,
        delivered=1800.0,
        corrects="id-of-the-breach",
    )
    other = ev(Outcome.BREACHED, T0 - 20 * MIN, item="T-2", promised=900.0)
    for event in [met, breach, other] if correction_first else [breach, other, met]:
        assert windows.observe(event) is ObserveResult.COUNTED


@pytest.mark.parametrize("correction_first", [False, True])
def test_a_correction_takes_its_breach_back(correction_first: bool) -> None:
    windows = new()
    breach_then_correction(windows, correction_first)
    f = by_window(windows.snapshot(T0))["1h"]
    assert (f.met, f.breached, f.attainment) == (1, 1, 0.5)
    assert f.latest_breached == ("T-2",)
    # promised: the met's 3600 and T-2's 900; the corrected breach's 3600 is gone
    assert close(f.promised_p50, 900.0) and close(f.promised_p90, 900.0)
    assert windows.pending_corrections == 0
    f5 = by_window(windows.snapshot(T0))
    assert "5m" not in f5  # nothing left in the last 5 minutes


def test_a_correction_leaves_the_same_state_whichever_comes_first() -> None:
    one, two = new(), new()
    breach_then_correction(one, correction_first=False)
    breach_then_correction(two, correction_first=True)
    assert one.to_dict() == two.to_dict()


def test_a_correction_of_the_only_event_leaves_no_empty_figures() -> None:
    windows = new()
    windows.observe(ev(Outcome.BREACHED, T0 - 2 * MIN, item="T-1"))
    windows.observe(ev(Outcome.MET, T0 + MIN, item="T-1", gap=-1.0, corrects="b"))
    assert list(by_window(windows.snapshot(T0))) == ["6h", "24h", "7d"]  # the met, ahead in 6h+
    windows.observe(ev(Outcome.BREACHED, T0 - MIN, item="T-9", kind=RES))
    windows.observe(ev(Outcome.MET, T0 - 2 * MIN, item="T-9", kind=RES, corrects="c"))
    assert [f.met for f in windows.snapshot(T0) if f.promise_kind is RES] == [1] * len(WINDOWS)


def test_corrections_match_by_cycle_and_wait_only_for_the_horizon() -> None:
    windows = new(correction_horizon_seconds=3600)
    windows.observe(ev(Outcome.BREACHED, T0 - MIN, item="T-1", cycle=1))
    windows.observe(ev(Outcome.MET, T0 - 2 * MIN, item="T-1", cycle=0, corrects="x"))
    assert windows.pending_corrections == 1
    assert by_window(windows.snapshot(T0))["5m"].breached == 1
    windows.advance(T0 + H + 2 * MIN)
    assert windows.pending_corrections == 0
    # the breach it waited for is no longer taken back
    windows.observe(ev(Outcome.BREACHED, T0 + H, item="T-1", cycle=0))
    assert by_window(windows.snapshot(T0 + H + 2 * MIN))["5m"].breached == 1
    # a breach older than the horizon stays, whichever comes first
    for correction_first in (False, True):
        old = new(correction_horizon_seconds=600)
        breach = ev(Outcome.BREACHED, T0 - 11 * MIN, item="T-2")
        met = ev(Outcome.MET, T0 - 50 * MIN, item="T-2", gap=-1.0, corrects="z")
        for event in [met, breach] if correction_first else [breach, met]:
            old.observe(event)
        assert (by_window(old.snapshot(T0))["1h"].breached, old.pending_corrections) == (1, 1)
    with pytest.raises(WindowStateError, match="bad_horizon"):
        new(correction_horizon_seconds=8 * 86_400)


# --- checkpoints ------------------------------------------------------------------------------


def busy(windows: RollingWindows) -> None:
    for i in range(40):
        at = T0 - i * 17 * MIN
        kind = FR if i % 2 else RES
        segment = {"team": "abc"[i % 3]}
        windows.observe(
            ev(
                Outcome.MET,
                at,
                item=f"M-{i}",
                kind=kind,
                segment=segment,
                gap=-float(i),
                delivered=100.0 + i,
            )
        )
        windows.observe(ev(Outcome.BREACHED, at, item=f"B-{i}", kind=kind, segment=segment))
        windows.observe(
            ev(
                Outcome.FEEDBACK,
                at,
                item=f"M-{i}",
                kind=kind,
                segment=segment,
                gap=float(i * 60),
                csat=1 + i % 5,
                nps=i % 11,
            )
        )
        windows.observe_job_completion(segment, at, fixed=i % 3 > 0, is_revisit=i % 4 == 0)
    windows.observe(ev(Outcome.MET, T0 + 3 * MIN, item="future", gap=-1.0))
    windows.observe(ev(Outcome.MET, T0, item="B-1", kind=FR, segment={"team": "b"}, corrects="x"))
    windows.observe(ev(Outcome.MET, T0, item="B-99", gap=-1.0, corrects="waits"))


def test_checkpoint_round_trip_gives_the_same_figures_and_carries_on() -> None:
    windows = new(on_time_tolerance_seconds=30.0, latest_breached_limit=5)
    busy(windows)
    windows.observe(ev(Outcome.MET, T0 - 9 * D))
    windows.advance(T0 + 2 * S)
    state = windows.to_dict()
    restored = RollingWindows.from_dict(json.loads(json.dumps(state)))
    assert restored.to_dict() == state
    assert restored.too_late == 1 and restored.latest_breached_limit == 5
    assert restored.pending_corrections == windows.pending_corrections == 1
    assert restored.snapshot(T0) == windows.snapshot(T0)
    for w in (windows, restored):
        w.observe(ev(Outcome.BREACHED, T0 - 3 * H, item="after"))
        w.observe(ev(Outcome.BREACHED, T0 - 2 * H, item="B-99"))  # taken back on arrival
        w.observe(ev(Outcome.MET, T0, item="B-3", kind=FR, segment={"team": "a"}, corrects="y"))
    later = T0 + 5 * H
    assert [f.as_dict() for f in restored.snapshot(later)] == [
        f.as_dict() for f in windows.snapshot(later)
    ]


def test_a_checkpoint_can_share_a_keyer() -> None:
    windows = new()
    busy(windows)
    state = json.loads(json.dumps(windows.to_dict()))
    shared = SegmentKeyer(["team", "region"], cap=10)
    restored = RollingWindows.from_dict(state, keyer=shared)
    assert restored.keyer is shared
    assert restored.snapshot(T0) == windows.snapshot(T0)
    with pytest.raises(WindowStateError, match="incompatible_state"):
        RollingWindows.from_dict(state, keyer=SegmentKeyer(["team"], cap=10))


def test_checkpoint_is_compact() -> None:
    windows = new()
    busy(windows)
    assert len(json.dumps(windows.to_dict())) < 100_000


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s.update(version=99),
        lambda s: s.update(relative_accuracy=0.02),
        lambda s: s.update(windows=[["5m", 300, 5]]),
        lambda s: s.pop("keyer"),
        lambda s: s["series"][0].update(segment=["a", "eu", "extra"]),
        lambda s: s["series"][0]["buckets"]["5m"][0].__setitem__(1, [1, 2]),
    ],
)
def test_a_damaged_checkpoint_is_refused(damage: Any) -> None:
    windows = new()
    windows.observe(ev(Outcome.MET, T0, gap=-1.0))
    state = json.loads(json.dumps(windows.to_dict()))
    damage(state)
    with pytest.raises(WindowStateError):
        RollingWindows.from_dict(state)


# --- properties -------------------------------------------------------------------------------

OUTCOMES = [
    Outcome.MET,
    Outcome.BREACHED,
    Outcome.DELIVERED_LATE,
    Outcome.AT_RISK,
    Outcome.CANCELLED,
    Outcome.FEEDBACK,
]


@st.composite
def events(
    draw: st.DrawFn, earliest: timedelta = -7 * D - 3 * H, corrections: bool = False
) -> GapData:
    outcome = draw(st.sampled_from(OUTCOMES))
    # Half the events near T0, so the short windows see some too.
    near = st.integers(int(-20 * MIN / US), int(5 * MIN / US))
    offset = draw(st.integers(int(earliest / US), int(3 * H / US)) | near)
    gap: float | None = None
    if outcome is Outcome.MET:
        gap = -draw(st.integers(0, 7200)) / 4
    elif outcome in (Outcome.DELIVERED_LATE, Outcome.FEEDBACK):
        gap = draw(st.one_of(st.none(), st.integers(-7200, 7200).map(float)))
    delivered = None if gap is None else draw(st.integers(1, 90_000)) / 8
    return ev(
        outcome,
        T0 + offset * US,
        item=f"T-{draw(st.integers(0, 3 if corrections else 9))}",
        kind=draw(st.sampled_from([FR, RES])),
        segment={"team": draw(st.sampled_from("ab"))},
        gap=gap,
        promised=draw(st.integers(60, 86_400)),
        delivered=delivered,
        csat=draw(st.none() | st.integers(1, 5)),
        nps=draw(st.none() | st.integers(0, 10)),
        corrects="b" if corrections and outcome is Outcome.MET and draw(st.booleans()) else None,
    )


def one_breach_and_correction_each(batch: list[GapData]) -> list[GapData]:
    """The clock emits each breach once and corrects it at most once."""
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for e in batch:
        key = (e.item_id, e.promise_kind, e.cycle, e.round, e.outcome, e.corrects)
        if e.outcome is Outcome.BREACHED or e.corrects:
            if key in seen:
                continue
            seen.add(key)
        kept.append(e)
    return kept


def dump(figures: Sequence[WindowFigures]) -> list[dict[str, Any]]:
    return [f.as_dict() for f in figures]


@settings(max_examples=80, deadline=None)
@given(
    st.booleans().flatmap(
        lambda c: st.tuples(st.just(c), st.lists(events(corrections=c), max_size=25))
    ),
    st.randoms(use_true_random=False),
    st.sampled_from([600, 86_400]),
)
def test_event_order_does_not_matter(
    case: tuple[bool, list[GapData]], rng: Any, horizon: int
) -> None:
    corrections, batch = case
    batch = one_breach_and_correction_each(batch)
    shuffled = list(batch)
    rng.shuffle(shuffled)
    # A taken-back breach may have pushed another item out of a full list, so with corrections
    # the bound stays above the 4 item ids drawn.
    limit = 20 if corrections else 3
    one, two = (
        new(latest_breached_limit=limit, correction_horizon_seconds=horizon) for _ in range(2)
    )
    for event in batch:
        one.observe(event)
    for event in shuffled:
        two.observe(event)
    assert dump(one.snapshot(T0)) == dump(two.snapshot(T0))
    assert one.to_dict() == two.to_dict()


@settings(max_examples=60, deadline=None)
@given(st.lists(events(), max_size=25), st.integers(0, 900) | st.integers(0, int(4 * D / S)))
def test_figures_match_a_reference_and_nest(batch: list[GapData], step_s: int) -> None:
    windows = new()
    for event in batch:
        windows.observe(event)
    as_of = T0 + step_s * S
    figures = windows.snapshot(as_of)
    now_us = (as_of - datetime(1970, 1, 1, tzinfo=UTC)) // US
    seen = {(f.segment["team"], f.promise_kind, f.window): f for f in figures}
    for team in "ab":
        for kind in (FR, RES):
            previous = None
            for spec in WINDOWS:
                width = spec.bucket_seconds * 1_000_000
                k = now_us // width
                live = [
                    e
                    for e in batch
                    if e.segment["team"] == team
                    and e.promise_kind is kind
                    and k - spec.seconds // spec.bucket_seconds
                    < ((e.outcome_at - datetime(1970, 1, 1, tzinfo=UTC)) // US) // width
                    <= k
                    and e.outcome_at >= T0 - 7 * D + 2 * H  # not too late when observed
                ]
                f = seen.get((team, kind, spec.name))
                if not live:
                    assert f is None
                    continue
                assert f is not None
                met = sum(e.outcome is Outcome.MET for e in live)
                breached = sum(e.outcome is Outcome.BREACHED for e in live)
                assert (f.met, f.breached) == (met, breached)
                assert f.delivered_late == sum(e.outcome is Outcome.DELIVERED_LATE for e in live)
                assert f.attainment is None or 0.0 <= f.attainment <= 1.0
                gaps = [
                    e.gap_seconds
                    for e in live
                    if e.outcome in (Outcome.MET, Outcome.DELIVERED_LATE)
                    and e.gap_seconds is not None
                ]
                if gaps:
                    assert close(f.gap_p90, exact_quantile(gaps, 0.9))
                else:
                    assert f.gap_p90 is None
                csat = [e.feedback.csat for e in live if e.feedback and e.feedback.csat]
                assert f.csat_count == len(csat)
                assert f.csat_mean == (pytest.approx(sum(csat) / len(csat)) if csat else None)
                counts = (f.met, f.breached, f.delivered_late, f.at_risk, f.csat_count, f.nps_count)
                if previous is not None:  # 5m <= 1h <= 24h <= 7d
                    assert all(a >= b for a, b in zip(counts, previous, strict=True))
                previous = counts


@settings(max_examples=40, deadline=None)
@given(
    st.lists(events(earliest=-2 * D), max_size=20),
    st.lists(st.integers(0, 900) | st.integers(0, int(2 * D / S)), max_size=4),
)
def test_expiry_equals_never_having_seen_the_expired(
    batch: list[GapData], steps: list[int]
) -> None:
    """Observing at T0 and advancing in steps = observing, at the end, what is still live."""
    stepped = new()
    for event in batch:
        stepped.observe(event)
    end = T0
    for seconds in sorted(steps):
        end = T0 + seconds * S
        stepped.advance(end)
    fresh = new(watermark=end)
    for event in batch:
        fresh.observe(event)
    assert dump(stepped.snapshot(end)) == dump(fresh.snapshot(end))

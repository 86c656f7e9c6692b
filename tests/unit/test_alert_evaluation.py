"""Rule evaluation on the scorer's snapshot records: hand-computed burn rates, divergence, etc."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gapwatch.core.alerts.evaluation import Evaluator, FigureError, FiguresBook, evaluate
from gapwatch.core.alerts.lifecycle import Verdict
from gapwatch.core.alerts.rules import AlertsConfig, Severity
from gapwatch.core.promises import PromiseKind
from gapwatch.core.windows import WINDOWS, WindowFigures

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
STALE_AFTER = 300.0
FR = PromiseKind.FIRST_RESPONSE
RES = PromiseKind.RESOLUTION
A_EU = {"team": "a", "region": "eu"}
A_US = {"team": "a", "region": "us"}
B_EU = {"team": "b", "region": "eu"}
SECONDS = {w.name: w.seconds for w in WINDOWS}


def window_record(
    window: str,
    *,
    met: int = 0,
    breached: int = 0,
    delivered_late: int = 0,
    segment: dict[str, str] = A_EU,
    kind: PromiseKind = FR,
    as_of: datetime = NOW,
    gap_p90: float | None = None,
    promised_p90: float | None = None,
    delivered_p90: float | None = None,
    csat_mean: float | None = None,
    csat_count: int = 0,
    latest_breached: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A record exactly as the scorer puts it on the scores topic."""
    outcomes = met + breached
    figures = WindowFigures(
        segment=dict(segment),
        promise_kind=kind,
        window=window,
        window_seconds=SECONDS[window],
        as_of=as_of,
        met=met,
        breached=breached,
        delivered_late=delivered_late,
        at_risk=0,
        cancelled=0,
        attainment=met / outcomes if outcomes else None,
        gap_p50=None,
        gap_p90=gap_p90,
        gap_p99=None,
        promised_p50=None,
        promised_p90=promised_p90,
        delivered_p50=None,
        delivered_p90=delivered_p90,
        csat_mean=csat_mean,
        csat_count=csat_count,
        nps=None,
        nps_count=0,
        latest_breached=latest_breached,
    )
    return {"kind": "window", **figures.as_dict()}


def open_record(
    *,
    overdue: int,
    partition: int = 0,
    segment: dict[str, str] = A_EU,
    kind: PromiseKind = FR,
    as_of: datetime = NOW,
    open_: int = 10,
    at_risk: int = 1,
) -> dict[str, Any]:
    """As `export_open_counts` in services/scorer/app.py writes it."""
    return {
        "kind": "open",
        "segment": dict(segment),
        "promise_kind": kind.value,
        "source_partition": partition,
        "open": open_,
        "at_risk": at_risk,
        "overdue": overdue,
        "as_of": as_of.isoformat(),
    }


def book_of(*records: dict[str, Any]) -> FiguresBook:
    book = FiguresBook()
    for record in records:
        book.update(record)
    return book


def rules(*rules: dict[str, Any]) -> AlertsConfig:
    return AlertsConfig.model_validate({"version": "test", "rules": list(rules)})


def run(
    cfg: AlertsConfig, *records: dict[str, Any], now: datetime = NOW
) -> dict[tuple[str, tuple[str, ...]], Verdict]:
    return evaluate(cfg, book_of(*records), now, stale_after=STALE_AFTER)


def burn_rule(**changes: Any) -> dict[str, Any]:
    condition = {"type": "burn_rate", "objective": 0.95}
    condition.update(changes.pop("condition", {}))
    return {"name": "burn", "group_by": ["team"], "condition": condition, **changes}


def burn_records(
    *pairs: tuple[str, int, int], segment: dict[str, str] = A_EU, **kw: Any
) -> list[dict[str, Any]]:
    return [
        window_record(w, met=met, breached=breached, segment=segment, **kw)
        for w, met, breached in pairs
    ]


# --- FiguresBook ---------------------------------------------------------------------------------


def test_book_takes_scorer_records() -> None:
    book = book_of(
        window_record("1h", met=3, breached=1),
        window_record("5m", met=1),
        open_record(overdue=2),
        window_record("1h", met=1, segment=B_EU),
    )
    assert book.version == 2  # two distinct segments
    assert sorted(book.segments.values(), key=lambda s: s["team"]) == [A_EU, B_EU]
    assert book.latest_as_of == NOW.timestamp()


def test_book_reads_as_of_with_z_and_with_offset() -> None:
    z = window_record("1h", met=1)
    assert z["as_of"] == "2026-03-02T12:00:00Z"
    offset = open_record(overdue=0, as_of=NOW + timedelta(seconds=1))
    assert offset["as_of"] == "2026-03-02T12:00:01+00:00"
    book = book_of(z, offset)
    assert book.latest_as_of == NOW.timestamp() + 1


def _broken(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    record = dict(base)
    for key, value in changes.items():
        if value is _DROP:
            record.pop(key)
        else:
            record[key] = value
    return record


_DROP = object()
_W = window_record("1h", met=1, breached=1)
_O = open_record(overdue=1)


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(_broken(_W, kind="gauge"), id="unknown-kind"),
        pytest.param(_broken(_W, kind=_DROP), id="no-kind"),
        pytest.param(_broken(_W, as_of=_DROP), id="missing-as-of"),
        pytest.param(_broken(_W, as_of=None), id="null-as-of"),
        pytest.param(_broken(_W, as_of=1772452800), id="numeric-as-of"),
        pytest.param(_broken(_W, as_of="yesterday"), id="as-of-not-iso"),
        pytest.param(_broken(_W, as_of="2026-03-02T12:00:00"), id="naive-as-of"),
        pytest.param(_broken(_W, met=-1), id="negative-met"),
        pytest.param(_broken(_W, breached=-3), id="negative-breached"),
        pytest.param(_broken(_W, csat_count=-1), id="negative-csat-count"),
        pytest.param(_broken(_W, met=1.5), id="fractional-count"),
        pytest.param(_broken(_W, met=True), id="bool-count"),
        pytest.param(_broken(_W, met="3"), id="string-count"),
        pytest.param(_broken(_W, window="2h"), id="unknown-window"),
        pytest.param(_broken(_W, window=_DROP), id="missing-window"),
        pytest.param(_broken(_W, promise_kind="callback"), id="bad-promise-kind"),
        pytest.param(_broken(_W, promise_kind=None), id="null-promise-kind"),
        pytest.param(_broken(_W, segment=["team", "a"]), id="segment-not-object"),
        pytest.param(_broken(_W, segment={"team": 1}), id="segment-value-not-string"),
        pytest.param(_broken(_W, segment=_DROP), id="missing-segment"),
        pytest.param(_broken(_W, gap_p90="fast"), id="quantile-not-number"),
        pytest.param(_broken(_W, latest_breached="T-1"), id="latest-not-list"),
        pytest.param(_broken(_W, latest_breached=[1, 2]), id="latest-not-ids"),
        pytest.param(_broken(_O, overdue=-1), id="negative-overdue"),
        pytest.param(_broken(_O, open=-2), id="negative-open"),
        pytest.param(_broken(_O, source_partition=_DROP), id="missing-partition"),
        pytest.param(_broken(_O, source_partition="0"), id="partition-not-int"),
        pytest.param(_broken(_O, source_partition=False), id="partition-bool"),
        pytest.param(_broken(_O, as_of="2026-03-02T12:00:00"), id="open-naive-as-of"),
        pytest.param(_broken(_O, promise_kind="callback"), id="open-bad-promise-kind"),
    ],
)
def test_book_rejects_malformed_records(record: dict[str, Any]) -> None:
    book = FiguresBook()
    with pytest.raises(FigureError):
        book.update(record)
    assert book.segments == {}
    assert book.version == 0
    assert book.latest_as_of == 0.0


def test_figure_error_is_a_value_error() -> None:
    assert issubclass(FigureError, ValueError)


@pytest.mark.parametrize("newer_first", [False, True])
def test_book_keeps_the_newer_window_record_in_any_arrival_order(newer_first: bool) -> None:
    cfg = rules(burn_rule(condition={"min_events": 1}))
    newer = burn_records(("1h", 0, 20), ("5m", 0, 10), as_of=NOW - timedelta(seconds=10))
    older = burn_records(("1h", 20, 0), ("5m", 10, 0), as_of=NOW - timedelta(seconds=20))
    records = [*newer, *older] if newer_first else [*older, *newer]
    verdict = run(cfg, *records)[("burn", ("a",))]
    assert verdict.firing is True
    assert verdict.figures["breached_long"] == 20
    assert verdict.figures["met_long"] == 0


@pytest.mark.parametrize("newer_first", [False, True])
def test_book_keeps_the_newer_open_record_in_any_arrival_order(newer_first: bool) -> None:
    cfg = rules(
        {"name": "overdue", "group_by": ["team"], "condition": {"type": "overdue", "above": 3}}
    )
    newer = open_record(overdue=4, as_of=NOW - timedelta(seconds=5))
    older = open_record(overdue=0, as_of=NOW - timedelta(seconds=60))
    records = [newer, older] if newer_first else [older, newer]
    verdict = run(cfg, *records)[("overdue", ("a",))]
    assert verdict.firing is True
    assert verdict.figures["overdue"] == 4


# --- burn rate -----------------------------------------------------------------------------------
# objective 0.95: budget 0.05; burn = (breached / (met + breached)) / 0.05.
# Default pairs: page 1h & 5m at 14.4x, ticket 6h & 30m at 6x; min_events 10.


def test_burn_exactly_at_page_factor_fires() -> None:
    # 1h: 72 of 100 late, error 0.72, burn 14.4 = factor; 5m: 8 of 10, burn 16.
    verdict = run(rules(burn_rule()), *burn_records(("1h", 28, 72), ("5m", 2, 8)))[("burn", ("a",))]
    assert verdict.figures["burn_rate_long"] == 14.4
    assert verdict.firing is True
    assert verdict.severity is Severity.PAGE


def test_burn_exactly_at_ticket_factor_fires() -> None:
    # 6h: 30 of 100 late, burn 6.0 = factor; 30m: 5 of 10, burn 10. 1h/5m healthy.
    records = burn_records(("1h", 100, 0), ("5m", 10, 0), ("6h", 70, 30), ("30m", 5, 5))
    verdict = run(rules(burn_rule()), *records)[("burn", ("a",))]
    assert verdict.firing is True
    assert verdict.severity is Severity.TICKET


def test_page_pair_fires_with_figures() -> None:
    # 1h: 80 of 100 late, error 0.8, burn 16; 5m: 8 of 10, burn 16. Both >= 14.4.
    verdict = run(rules(burn_rule()), *burn_records(("1h", 20, 80), ("5m", 2, 8)))[("burn", ("a",))]
    assert verdict.firing is True
    assert verdict.severity is Severity.PAGE
    assert verdict.window == "1h"
    assert verdict.figures == {
        "objective": 0.95,
        "factor": 14.4,
        "long_window": "1h",
        "short_window": "5m",
        "attainment_long": 0.2,
        "attainment_short": 0.2,
        "burn_rate_long": 16.0,
        "burn_rate_short": 16.0,
        "met_long": 20,
        "breached_long": 80,
        "min_events": 10,
    }
    assert verdict.summary == (
        "burn (team=a): attainment 20.0% over 1h burns the 95.0% objective's budget "
        "16.0x (limit 14.4x)"
    )


def test_latest_breached_of_one_segment_reach_the_verdict() -> None:
    records = burn_records(("1h", 20, 80), ("5m", 2, 8), latest_breached=("T-1",))
    assert run(rules(burn_rule()), *records)[("burn", ("a",))].latest_breached == ("T-1",)


def test_latest_breached_keep_the_scorers_newest_first_order() -> None:
    records = burn_records(("1h", 20, 80), ("5m", 2, 8), latest_breached=("T-3", "T-2", "T-1"))
    verdict = run(rules(burn_rule()), *records)[("burn", ("a",))]
    assert verdict.latest_breached == ("T-3", "T-2", "T-1")


def test_latest_breached_keeps_the_newest_twenty() -> None:
    newest_first = tuple(f"T-{i}" for i in range(25, 0, -1))  # T-25 (newest) .. T-1
    records = burn_records(("1h", 20, 80), ("5m", 2, 8), latest_breached=newest_first)
    verdict = run(rules(burn_rule()), *records)[("burn", ("a",))]
    assert set(verdict.latest_breached) == {f"T-{i}" for i in range(25, 5, -1)}


def test_long_burns_but_short_does_not_no_page() -> None:
    # 1h burns 16; 5m: 1 of 10 late, burn 2 < 14.4. Multi-window AND.
    verdict = run(rules(burn_rule()), *burn_records(("1h", 20, 80), ("5m", 9, 1)))[("burn", ("a",))]
    assert verdict.firing is False
    assert verdict.figures["burn_rate_long"] == 16.0
    assert verdict.figures["burn_rate_short"] == 2.0
    assert verdict.summary == "burn (team=a): attainment 20.0% over 1h"


def test_short_burns_but_long_does_not_no_page() -> None:
    # 1h: 10 of 100 late, burn 2; 5m: 10 of 10, burn 20.
    verdict = run(rules(burn_rule()), *burn_records(("1h", 90, 10), ("5m", 0, 10)))[
        ("burn", ("a",))
    ]
    assert verdict.firing is False
    assert verdict.figures["burn_rate_long"] == 2.0
    assert verdict.figures["burn_rate_short"] == 20.0


def test_short_window_without_outcomes_does_not_burn() -> None:
    verdict = run(rules(burn_rule()), *burn_records(("1h", 20, 80), ("5m", 0, 0)))[("burn", ("a",))]
    assert verdict.firing is False
    assert verdict.figures["burn_rate_short"] == 0.0
    assert verdict.figures["attainment_short"] is None


def test_only_ticket_pair_crosses_files_a_ticket() -> None:
    # 1h: 5 of 100 late, burn 1; 5m clean. 6h: 40 of 100, burn 8; 30m: 5 of 10, burn 10.
    records = burn_records(("1h", 95, 5), ("5m", 10, 0), ("6h", 60, 40), ("30m", 5, 5))
    verdict = run(rules(burn_rule()), *records)[("burn", ("a",))]
    assert verdict.firing is True
    assert verdict.severity is Severity.TICKET
    assert verdict.window == "6h"
    assert verdict.figures["factor"] == 6.0
    assert verdict.figures["burn_rate_long"] == 8.0
    assert verdict.figures["burn_rate_short"] == 10.0
    assert verdict.figures["attainment_long"] == 0.6


def test_both_pairs_cross_pages() -> None:
    records = burn_records(("1h", 20, 80), ("5m", 2, 8), ("6h", 60, 40), ("30m", 5, 5))
    verdict = run(rules(burn_rule()), *records)[("burn", ("a",))]
    assert verdict.firing is True
    assert verdict.severity is Severity.PAGE
    assert verdict.window == "1h"
    assert verdict.figures["factor"] == 14.4
    assert verdict.figures["burn_rate_long"] == 16.0


def test_highest_severity_wins_whatever_the_pair_order() -> None:
    windows = [
        {"long": "6h", "short": "30m", "factor": 6, "severity": "ticket"},
        {"long": "1h", "short": "5m", "factor": 14.4, "severity": "page"},
    ]
    records = burn_records(("1h", 20, 80), ("5m", 2, 8), ("6h", 60, 40), ("30m", 5, 5))
    verdict = run(rules(burn_rule(condition={"windows": windows})), *records)[("burn", ("a",))]
    assert verdict.severity is Severity.PAGE
    assert verdict.window == "1h"


def test_not_firing_verdict_reports_the_first_judged_pair() -> None:
    # 1h has no outcomes, so the first judged pair is the 6h one: 10 of 100, burn 2.
    records = burn_records(("1h", 0, 0), ("5m", 0, 0), ("6h", 90, 10), ("30m", 10, 0))
    verdict = run(rules(burn_rule(severity="ticket")), *records)[("burn", ("a",))]
    assert verdict.firing is False
    assert verdict.severity is Severity.TICKET  # the rule's severity
    assert verdict.window == "6h"
    assert verdict.figures["long_window"] == "6h"
    assert verdict.figures["burn_rate_long"] == 2.0
    assert verdict.figures["attainment_long"] == 0.9


SINGLE_PAIR_6X = {"windows": [{"long": "1h", "short": "5m", "factor": 6, "severity": "page"}]}


def test_min_volume_guard_keeps_a_burning_trickle_quiet() -> None:
    # 1 late of 2 in both windows: error 0.5, burn 10 >= 6, but 2 outcomes < min_events 10.
    cfg = rules(burn_rule(condition={**SINGLE_PAIR_6X, "min_events": 10}))
    verdict = run(cfg, *burn_records(("1h", 1, 1), ("5m", 1, 1)))[("burn", ("a",))]
    assert verdict.firing is False
    assert verdict.figures["burn_rate_long"] == 10.0
    assert verdict.figures["attainment_long"] == 0.5
    assert verdict.figures["min_events"] == 10


def test_min_volume_reached_fires() -> None:
    cfg = rules(burn_rule(condition={**SINGLE_PAIR_6X, "min_events": 2}))
    verdict = run(cfg, *burn_records(("1h", 1, 1), ("5m", 1, 1)))[("burn", ("a",))]
    assert verdict.firing is True


def test_no_outcomes_in_long_window_is_no_data() -> None:
    records = burn_records(("1h", 0, 0), ("5m", 0, 5), ("6h", 0, 0), ("30m", 0, 5))
    verdict = run(rules(burn_rule()), *records)[("burn", ("a",))]
    assert verdict.firing is None
    assert verdict.figures == {}
    assert verdict.summary == "burn (team=a): no data"


def test_stale_records_are_no_data() -> None:
    old = NOW - timedelta(seconds=STALE_AFTER + 1)
    records = burn_records(("1h", 20, 80), ("5m", 2, 8), as_of=old)
    verdict = run(rules(burn_rule()), *records)[("burn", ("a",))]
    assert verdict.firing is None


def test_record_exactly_stale_after_old_still_counts() -> None:
    edge = NOW - timedelta(seconds=STALE_AFTER)
    records = burn_records(("1h", 20, 80), ("5m", 2, 8), as_of=edge)
    assert run(rules(burn_rule()), *records)[("burn", ("a",))].firing is True


def test_stale_long_window_with_fresh_short_is_no_data() -> None:
    old = NOW - timedelta(seconds=STALE_AFTER + 1)
    records = [
        window_record("1h", met=20, breached=80, as_of=old),
        window_record("5m", met=2, breached=8),
    ]
    assert run(rules(burn_rule()), *records)[("burn", ("a",))].firing is None


def test_group_sums_counts_across_its_segments() -> None:
    # team a: eu 5 met 5 late, us 45 met 0 late: 5 late of 55, error 0.0909..., burn 1.8181...
    records = [
        *burn_records(("1h", 5, 5), ("5m", 1, 1), segment=A_EU),
        *burn_records(("1h", 45, 0), ("5m", 9, 0), segment=A_US),
        *burn_records(("1h", 0, 30), ("5m", 0, 10), segment=B_EU),
    ]
    verdicts = run(rules(burn_rule()), *records)
    assert set(verdicts) == {("burn", ("a",)), ("burn", ("b",))}
    a = verdicts[("burn", ("a",))]
    assert a.firing is False
    assert a.figures["met_long"] == 50
    assert a.figures["breached_long"] == 5
    assert a.figures["burn_rate_long"] == 1.8182
    assert a.figures["attainment_long"] == 0.909091
    assert a.figures["burn_rate_short"] == 1.8182  # 5m: 1 late of 11, the same error
    b = verdicts[("burn", ("b",))]
    assert b.firing is True
    assert b.figures["burn_rate_long"] == 20.0


def test_no_group_by_makes_one_group() -> None:
    records = [
        *burn_records(("1h", 5, 5), ("5m", 1, 1), segment=A_EU),
        *burn_records(("1h", 45, 0), ("5m", 9, 0), segment=B_EU),
    ]
    verdicts = run(rules(burn_rule(group_by=[])), *records)
    assert list(verdicts) == [("burn", ())]
    assert verdicts[("burn", ())].figures["met_long"] == 50
    assert verdicts[("burn", ())].summary == "burn: attainment 90.9% over 1h"


def test_group_by_label_missing_from_segment_reads_none() -> None:
    verdicts = run(rules(burn_rule(group_by=["tier"])), *burn_records(("1h", 20, 80), ("5m", 2, 8)))
    assert list(verdicts) == [("burn", ("none",))]


def test_match_filters_segments() -> None:
    # eu: 20 of 20 late (burn 20); us: 1000 met. All: 20 of 1020, burn 0.3922; eu only fires.
    records = [
        *burn_records(("1h", 0, 20), ("5m", 0, 10), segment=A_EU),
        *burn_records(("1h", 1000, 0), ("5m", 100, 0), segment=A_US),
    ]
    everything = run(rules(burn_rule()), *records)[("burn", ("a",))]
    assert everything.firing is False
    assert everything.figures["burn_rate_long"] == 0.3922
    eu = run(rules(burn_rule(match={"region": "eu"})), *records)[("burn", ("a",))]
    assert eu.firing is True
    assert eu.figures["met_long"] == 0
    assert eu.figures["breached_long"] == 20
    assert run(rules(burn_rule(match={"region": "ap"})), *records) == {}


def test_promise_kinds_filter() -> None:
    # first response: 20 of 20 late; resolution: 180 met. All kinds: 20 of 200, burn 2.
    records = [
        *burn_records(("1h", 0, 20), ("5m", 0, 10), kind=FR),
        *burn_records(("1h", 180, 0), ("5m", 10, 0), kind=RES),
    ]
    all_kinds = run(rules(burn_rule()), *records)[("burn", ("a",))]
    assert all_kinds.firing is False
    assert all_kinds.figures["burn_rate_long"] == 2.0
    assert all_kinds.figures["met_long"] == 180
    fr = run(rules(burn_rule(promise_kinds=["first_response"])), *records)[("burn", ("a",))]
    assert fr.firing is True
    assert fr.figures["burn_rate_long"] == 20.0
    res = run(rules(burn_rule(promise_kinds=["resolution"])), *records)[("burn", ("a",))]
    assert res.firing is False
    assert res.figures["burn_rate_long"] == 0.0
    none = run(rules(burn_rule(promise_kinds=["arrival"])), *records)
    assert none == {}


def test_two_rules_sharing_windows_are_judged_separately() -> None:
    cfg = rules(burn_rule(), burn_rule(name="burn-strict", condition={"objective": 0.999}))
    # 1h: 1 late of 100, error 0.01: burn 0.2 at 0.95, 10 at 0.999 (below 14.4 either way).
    verdicts = run(cfg, *burn_records(("1h", 99, 1), ("5m", 10, 0)))
    assert verdicts[("burn", ("a",))].figures["burn_rate_long"] == 0.2
    assert verdicts[("burn-strict", ("a",))].figures["burn_rate_long"] == 10.0


def test_known_group_without_figures_gets_a_no_data_verdict() -> None:
    cfg = rules(burn_rule())
    book = book_of(*burn_records(("1h", 20, 80), ("5m", 2, 8)))
    verdicts = Evaluator(cfg, stale_after=STALE_AFTER).evaluate(
        book, NOW, known={"burn": [("a",), ("gone",)], "other-rule": [("x",)]}
    )
    assert set(verdicts) == {("burn", ("a",)), ("burn", ("gone",))}
    assert verdicts[("burn", ("a",))].firing is True
    gone = verdicts[("burn", ("gone",))]
    assert gone.firing is None
    assert gone.severity is Severity.PAGE
    assert gone.summary == "burn (team=gone): no data"


def test_evaluator_sees_segments_that_appear_later() -> None:
    cfg = rules(burn_rule())
    evaluator = Evaluator(cfg, stale_after=STALE_AFTER)
    book = book_of(*burn_records(("1h", 20, 80), ("5m", 2, 8)))
    assert set(evaluator.evaluate(book, NOW)) == {("burn", ("a",))}
    for record in burn_records(("1h", 100, 0), ("5m", 10, 0), segment=B_EU):
        book.update(record)
    second = evaluator.evaluate(book, NOW)
    assert set(second) == {("burn", ("a",)), ("burn", ("b",))}
    assert second[("burn", ("b",))].firing is False


def test_evaluator_reads_updated_counts_of_known_segments() -> None:
    evaluator = Evaluator(rules(burn_rule()), stale_after=STALE_AFTER)
    book = book_of(*burn_records(("1h", 20, 80), ("5m", 2, 8)))
    assert evaluator.evaluate(book, NOW)[("burn", ("a",))].firing is True
    later = NOW + timedelta(seconds=60)
    for record in burn_records(("1h", 100, 0), ("5m", 10, 0), as_of=later):
        book.update(record)
    assert evaluator.evaluate(book, later)[("burn", ("a",))].firing is False


# --- divergence ----------------------------------------------------------------------------------


def divergence_rule(**condition: Any) -> dict[str, Any]:
    base = {"type": "divergence", "window": "1h", "max_ratio": 2.0, "min_events": 10}
    return {"name": "slow", "group_by": ["team"], "condition": {**base, **condition}}


def test_divergence_fires_when_delivered_p90_is_thrice_promised() -> None:
    record = window_record(
        "1h", met=10, delivered_p90=3000.0, promised_p90=1000.0, latest_breached=("T-9",)
    )
    verdict = run(rules(divergence_rule()), record)[("slow", ("a",))]
    assert verdict.firing is True
    assert verdict.window == "1h"
    assert verdict.figures == {
        "segment": {"region": "eu", "team": "a"},
        "events": 10,
        "delivered_p90": 3000.0,
        "promised_p90": 1000.0,
        "ratio": 3.0,
        "max_ratio": 2.0,
        "gap_p90": None,
        "max_gap_p90": None,
    }
    assert verdict.summary == (
        "slow (team=a): worst segment region=eu, team=a: delivered p90 is 3.00x promised p90 "
        "over 1h"
    )
    assert verdict.latest_breached == ("T-9",)


def test_divergence_at_exactly_max_ratio_does_not_fire() -> None:
    record = window_record("1h", met=10, delivered_p90=2000.0, promised_p90=1000.0)
    verdict = run(rules(divergence_rule()), record)[("slow", ("a",))]
    assert verdict.firing is False
    assert verdict.figures["ratio"] == 2.0
    assert verdict.latest_breached == ()


def test_divergence_counts_each_promise_once() -> None:
    # 7 met + 3 breached = 10 promises; the 3 late deliveries are those breaches again.
    record = window_record(
        "1h", met=7, breached=3, delivered_late=3, delivered_p90=3000.0, promised_p90=1000.0
    )
    verdict = run(rules(divergence_rule()), record)[("slow", ("a",))]
    assert verdict.firing is True
    assert verdict.figures["events"] == 10
    fewer = window_record(
        "1h", met=4, breached=3, delivered_late=3, delivered_p90=3000.0, promised_p90=1000.0
    )
    assert run(rules(divergence_rule()), fewer)[("slow", ("a",))].firing is False


def test_divergence_ignores_segments_below_min_events() -> None:
    # eu diverges tenfold on 9 outcomes; us (20 outcomes) only 1.5x.
    records = [
        window_record("1h", met=9, delivered_p90=10000.0, promised_p90=1000.0, segment=A_EU),
        window_record("1h", met=20, delivered_p90=1500.0, promised_p90=1000.0, segment=A_US),
    ]
    verdict = run(rules(divergence_rule()), *records)[("slow", ("a",))]
    assert verdict.firing is False
    assert verdict.figures["segment"] == A_US
    assert verdict.figures["ratio"] == 1.5


def test_divergence_with_only_small_segments_is_too_few_to_judge_not_no_data() -> None:
    # Like the burn-rate volume guard: fresh figures below min_events are healthy, so a firing
    # alert can resolve when volume drops; only missing or stale figures are no data.
    record = window_record("1h", met=9, delivered_p90=10000.0, promised_p90=1000.0)
    verdict = run(rules(divergence_rule()), record)[("slow", ("a",))]
    assert verdict.firing is False
    assert verdict.figures == {"min_events": 10, "segments": 1}


@pytest.mark.parametrize(
    "order",
    [("eu", "us", "ap"), ("us", "eu", "ap"), ("ap", "eu", "us")],
)
def test_divergence_names_the_worst_segment(order: tuple[str, ...]) -> None:
    delivered = {"eu": 2500.0, "us": 4000.0, "ap": 3000.0}  # ratios 2.5, 4, 3
    records = [
        window_record(
            "1h",
            met=10,
            delivered_p90=delivered[region],
            promised_p90=1000.0,
            segment={"team": "a", "region": region},
        )
        for region in order
    ]
    verdict = run(rules(divergence_rule()), *records)[("slow", ("a",))]
    assert verdict.firing is True
    assert verdict.figures["segment"] == {"team": "a", "region": "us"}
    assert verdict.figures["ratio"] == 4.0


def test_divergence_max_gap_p90_in_minutes() -> None:
    cfg = rules(divergence_rule(max_ratio=None, max_gap_p90="15m"))
    late = window_record("1h", met=10, gap_p90=1200.0)  # 20 min late at p90 > 15 min
    verdict = run(cfg, late)[("slow", ("a",))]
    assert verdict.firing is True
    assert verdict.figures["max_gap_p90"] == 900.0
    assert verdict.figures["gap_p90"] == 1200.0
    assert verdict.figures["ratio"] is None
    assert (
        verdict.summary == "slow (team=a): worst segment region=eu, team=a: gap p90 1200s over 1h"
    )
    at_limit = window_record("1h", met=10, gap_p90=900.0)
    assert run(cfg, at_limit)[("slow", ("a",))].firing is False


def test_divergence_either_threshold_fires() -> None:
    cfg = rules(divergence_rule(max_ratio=2.0, max_gap_p90="15m"))
    ratio_only = window_record(
        "1h", met=10, gap_p90=60.0, delivered_p90=3000.0, promised_p90=1000.0
    )
    assert run(cfg, ratio_only)[("slow", ("a",))].firing is True
    gap_only = window_record(
        "1h", met=10, gap_p90=1800.0, delivered_p90=1100.0, promised_p90=1000.0
    )
    assert run(cfg, gap_only)[("slow", ("a",))].firing is True
    neither = window_record("1h", met=10, gap_p90=60.0, delivered_p90=1100.0, promised_p90=1000.0)
    assert run(cfg, neither)[("slow", ("a",))].firing is False


def test_divergence_reads_only_its_window() -> None:
    record = window_record("24h", met=10, delivered_p90=3000.0, promised_p90=1000.0)
    assert run(rules(divergence_rule()), record) == {}


def test_divergence_stale_segment_is_no_data() -> None:
    old = NOW - timedelta(seconds=STALE_AFTER + 1)
    record = window_record("1h", met=10, delivered_p90=3000.0, promised_p90=1000.0, as_of=old)
    assert run(rules(divergence_rule()), record)[("slow", ("a",))].firing is None


# --- CSAT ----------------------------------------------------------------------------------------


def csat_rule(floor: float = 4.6, min_responses: int = 5) -> dict[str, Any]:
    condition = {"type": "csat", "window": "24h", "floor": floor, "min_responses": min_responses}
    return {"name": "csat", "group_by": ["team"], "condition": condition}


CSAT_RECORDS = (
    window_record("24h", met=1, csat_mean=3.0, csat_count=10, segment=A_EU),
    window_record("24h", met=1, csat_mean=5.0, csat_count=30, segment=A_US),
)


def test_csat_is_the_response_weighted_mean() -> None:
    # (3.0 * 10 + 5.0 * 30) / 40 = 4.5 < 4.6
    verdict = run(rules(csat_rule(floor=4.6)), *CSAT_RECORDS)[("csat", ("a",))]
    assert verdict.firing is True
    assert verdict.figures == {
        "csat_mean": 4.5,
        "csat_count": 40,
        "floor": 4.6,
        "min_responses": 5,
    }
    assert verdict.summary == "csat (team=a): CSAT 4.50 from 40 responses over 24h (floor 4.6)"


def test_csat_at_the_floor_does_not_fire() -> None:
    verdict = run(rules(csat_rule(floor=4.5)), *CSAT_RECORDS)[("csat", ("a",))]
    assert verdict.firing is False


def test_csat_below_floor_with_too_few_responses_is_not_firing() -> None:
    record = window_record("24h", met=1, csat_mean=1.0, csat_count=4)
    verdict = run(rules(csat_rule(min_responses=5)), record)[("csat", ("a",))]
    assert verdict.firing is False
    assert verdict.figures["csat_count"] == 4


def test_csat_without_responses_is_no_data() -> None:
    records = (
        window_record("24h", met=5),
        window_record("24h", met=5, csat_mean=2.0, csat_count=0, segment=A_US),
    )
    assert run(rules(csat_rule()), *records)[("csat", ("a",))].firing is None


def test_csat_ignores_stale_segments() -> None:
    old = NOW - timedelta(seconds=STALE_AFTER + 1)
    records = (
        window_record("24h", met=1, csat_mean=1.0, csat_count=100, segment=A_EU, as_of=old),
        window_record("24h", met=1, csat_mean=5.0, csat_count=30, segment=A_US),
    )
    verdict = run(rules(csat_rule()), *records)[("csat", ("a",))]
    assert verdict.firing is False
    assert verdict.figures["csat_mean"] == 5.0
    assert verdict.figures["csat_count"] == 30


# --- overdue -------------------------------------------------------------------------------------


def overdue_rule(above: int = 3, **changes: Any) -> dict[str, Any]:
    condition = {"type": "overdue", "above": above}
    return {"name": "overdue", "group_by": ["team"], "condition": condition, **changes}


def test_overdue_sums_partitions_and_segments() -> None:
    records = [
        open_record(overdue=1, partition=0, segment=A_EU, open_=10, at_risk=1),
        open_record(overdue=1, partition=1, segment=A_EU, open_=20, at_risk=2),
        open_record(overdue=2, partition=0, segment=A_US, open_=5, at_risk=0),
        open_record(overdue=9, partition=0, segment=B_EU),
    ]
    verdicts = run(rules(overdue_rule(above=3)), *records)
    a = verdicts[("overdue", ("a",))]
    assert a.firing is True
    assert a.window == "now"
    assert a.figures == {"open": 35, "at_risk": 3, "overdue": 4, "above": 3}
    assert a.summary == "overdue (team=a): 4 promises overdue and still open (limit 3)"
    assert verdicts[("overdue", ("b",))].figures["overdue"] == 9


@pytest.mark.parametrize(("overdue", "firing"), [(3, False), (4, True), (0, False)])
def test_overdue_fires_above_the_limit_not_at_it(overdue: int, firing: bool) -> None:
    records = [
        open_record(overdue=overdue - overdue // 2, partition=0),
        open_record(overdue=overdue // 2, partition=1),
    ]
    assert run(rules(overdue_rule(above=3)), *records)[("overdue", ("a",))].firing is firing


def test_overdue_ignores_a_stale_partition() -> None:
    old = NOW - timedelta(seconds=STALE_AFTER + 1)
    records = [
        open_record(overdue=3, partition=0),
        open_record(overdue=5, partition=1, as_of=old),
    ]
    verdict = run(rules(overdue_rule(above=3)), *records)[("overdue", ("a",))]
    assert verdict.firing is False
    assert verdict.figures["overdue"] == 3


def test_overdue_all_stale_is_no_data() -> None:
    old = NOW - timedelta(seconds=STALE_AFTER + 1)
    verdict = run(rules(overdue_rule()), open_record(overdue=50, as_of=old))[("overdue", ("a",))]
    assert verdict.firing is None
    assert verdict.summary == "overdue (team=a): no data"


def test_overdue_promise_kinds_filter() -> None:
    records = [open_record(overdue=4, kind=FR), open_record(overdue=1, kind=RES)]
    both = run(rules(overdue_rule()), *records)[("overdue", ("a",))]
    assert both.figures["overdue"] == 5
    res = run(rules(overdue_rule(promise_kinds=["resolution"])), *records)[("overdue", ("a",))]
    assert res.firing is False
    assert res.figures["overdue"] == 1


def test_overdue_match_filters_segments() -> None:
    records = [open_record(overdue=4, segment=A_EU), open_record(overdue=4, segment=A_US)]
    verdict = run(rules(overdue_rule(above=4, match={"region": "us"})), *records)
    assert verdict[("overdue", ("a",))].figures["overdue"] == 4
    assert verdict[("overdue", ("a",))].firing is False


def test_overdue_does_not_read_window_records() -> None:
    assert run(rules(overdue_rule()), window_record("1h", met=1, breached=9)) == {}


# --- quiet mode (what the alerter uses) ----------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(
        st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(0, 60)),
        min_size=1,
        max_size=12,
    ),
    known_teams=st.sets(st.sampled_from([f"t{i}" for i in range(12)]), max_size=4),
)
def test_quiet_mode_keeps_every_firing_and_known_verdict_and_drops_only_healthy_ones(
    counts: list[tuple[int, int, int]], known_teams: set[str]
) -> None:
    records = []
    for i, (met, breached, overdue) in enumerate(counts):
        segment = {"team": f"t{i}", "region": "eu"}
        for window in ("5m", "30m", "1h", "6h"):
            records.append(window_record(window, met=met, breached=breached, segment=segment))
        records.append(open_record(overdue=overdue, segment=segment))
    cfg = rules(
        burn_rule(condition={"min_events": 5}),
        {"name": "late", "group_by": ["team"], "condition": {"type": "overdue", "above": 30}},
    )
    book = book_of(*records)
    known = {"burn": [(t,) for t in known_teams], "late": [(t,) for t in known_teams]}
    evaluator = Evaluator(cfg, stale_after=STALE_AFTER)
    full = evaluator.evaluate(book, NOW, known)
    quiet = evaluator.evaluate(book, NOW, known, quiet=True)
    assert set(quiet) <= set(full)
    for key, verdict in full.items():
        if verdict.firing or key[1][0] in known_teams:
            assert quiet[key] == verdict
        else:
            assert key not in quiet

"""Replay re-scores history (issue 20 #3): whole-history totals, --sort, exit status, outputs."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from gapwatch.config import load_policies
from gapwatch.core.clock import ClockConfig
from gapwatch.core.examples import EXAMPLES
from gapwatch.core.feedback import ItemKind
from gapwatch.core.gaps import GapData, Outcome
from gapwatch.core.promises import PromiseKind
from gapwatch.core.scoring import Scoring, ScoringConfig, numbered, replay, replay_stream
from gapwatch.core.totals import Period, Totals, period_bounds, period_name
from gapwatch.core.windows import SegmentKeyer
from gapwatch.eventsort import UNSORTABLE, SortedLines, event_time_key
from gapwatch.simulation import Scenario, Simulator

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "deploy" / "config" / "policies.yaml"
START = datetime(2026, 3, 27, tzinfo=UTC)  # a month boundary four days in


@pytest.fixture(scope="module")
def config() -> ScoringConfig:
    return ScoringConfig(ClockConfig.from_policies(load_policies(POLICIES)))


def simulated(days: float, items_per_day: float = 300.0) -> list[bytes]:
    simulator = Simulator(
        start=START, items_per_second=items_per_day / 86_400, scenario=Scenario(), seed=7
    )
    return [orjson.dumps(e) for e in simulator.events_until(START + timedelta(days=days))]


@pytest.fixture(scope="module")
def week() -> list[bytes]:
    return simulated(6)


def gapwatch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "gapwatch", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=env,
    )


def replay_to(out: Path, source: Path, until: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`gapwatch replay` with the gap events in out/gaps.jsonl, the summary in out/summary.json."""
    gaps, summary = str(out / "gaps.jsonl"), str(out / "summary.json")
    return gapwatch(
        "replay", str(source), "--until", until, "-o", gaps, "--summary", summary, *extra
    )


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


# --- totals -------------------------------------------------------------------------------------


def test_whole_history_totals_equal_the_7d_window_of_an_input_shorter_than_it(
    config: ScoringConfig, week: list[bytes]
):
    """Same counts, sketch quantiles, CSAT by bucket and first-time fix: one way of counting."""
    result = replay(week, config, until=START + timedelta(days=6, hours=1))
    assert result.scoring.keyer is not None
    totals = Totals(result.scoring.keyer, on_time_share=config.on_time_share)
    for event in result.gap_events:
        totals.observe(event.data)
    seven = {
        (tuple(w.segment.items()), w.promise_kind): w.as_dict()
        for w in result.scoring.snapshot(START + timedelta(days=6, hours=1)).windows
        if w.window == "7d"
    }
    whole = {(tuple(f.segment.items()), f.promise_kind): f.as_dict() for f in totals.whole()}
    assert whole.keys() == seven.keys() and len(whole) > 20
    for key, figures in whole.items():
        window = seven[key]
        assert {k: window[k] for k in figures if k != "events"} == {
            k: v for k, v in figures.items() if k != "events"
        }, key
    assert sum(f.csat_count for f in totals.whole()) > 0
    assert sum(f.ftf_count for f in totals.whole()) > 0


def test_each_period_adds_up_to_the_whole(config: ScoringConfig, week: list[bytes]):
    result = replay(week, config)
    assert result.scoring.keyer is not None
    for period in Period:
        totals = Totals(result.scoring.keyer, period)
        for event in result.gap_events:
            totals.observe(event.data)
        names = {f.period for f in totals.periods()}
        assert names == (
            {"2026-03", "2026-04"} if period is Period.MONTH else {"2026-W13", "2026-W14"}
        )
        for whole in totals.whole():
            parts = [
                f
                for f in totals.periods()
                if (f.segment, f.promise_kind) == (whole.segment, whole.promise_kind)
            ]
            for field in ("events", "met", "breached", "delivered_late", "csat_count", "ftf_count"):
                assert sum(getattr(p, field) for p in parts) == getattr(whole, field)
        document = totals.as_dict()
        assert document["period"] == period.value
        assert [p["period"] for p in document["periods"]] == sorted(names)


def test_period_bounds_are_utc_months_and_iso_weeks():
    t = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_bounds(t, Period.MONTH) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    start, end = period_bounds(t, Period.WEEK)
    assert (start, end - start) == (datetime(2026, 12, 28, tzinfo=UTC), timedelta(days=7))
    assert period_name(start, Period.WEEK) == "2026-W53"
    assert period_name(datetime(2026, 3, 1, tzinfo=UTC), Period.MONTH) == "2026-03"


def gap(outcome: Outcome, at: datetime, *, corrects: str | None = None) -> GapData:
    due = START + timedelta(hours=1)
    return GapData(
        item_id="T-1",
        item_kind=ItemKind.TICKET,
        promise_kind=PromiseKind.FIRST_RESPONSE,
        cycle=0,
        segment={"team": "a"},
        outcome=outcome,
        outcome_at=at,
        started_at=START,
        promised_at=due,
        original_promised_at=due,
        delivered_at=None if outcome is Outcome.BREACHED else at,
        gap_seconds=None if outcome is Outcome.BREACHED else (at - due).total_seconds(),
        promised_seconds=3600.0,
        delivered_seconds=None if outcome is Outcome.BREACHED else (at - START).total_seconds(),
        caused_by="in-1",
        corrects=corrects,
    )


def test_a_correction_takes_its_breach_back_in_its_period():
    totals = Totals(SegmentKeyer(["team"], cap=10))
    totals.observe(gap(Outcome.BREACHED, START + timedelta(hours=1)))
    totals.observe(gap(Outcome.MET, START + timedelta(minutes=59), corrects="breach-id"))
    [whole] = totals.whole()
    [month] = totals.periods()
    for figures in (whole, month):
        assert (figures.met, figures.breached, figures.attainment) == (1, 0, 1.0)
        assert figures.promised_p50 == pytest.approx(3600.0, rel=0.01)
    assert totals.remembered_breaches == 0


# --- the streaming core -------------------------------------------------------------------------


def test_streaming_replay_with_bounded_memory_gives_what_replay_gives(config: ScoringConfig):
    """Resting idle clocks, advancing the windows and counting them only for the last days
    change nothing in the gap events or the final windows."""
    lines = simulated(12, items_per_day=150)
    until = START + timedelta(days=12, hours=1)
    want = replay(lines, config, until)
    scoring = Scoring(config)
    got = list(
        replay_stream(
            numbered(lines),
            scoring,
            until,
            None,
            timedelta(days=1),
            advance_windows=True,
            windows_from=until - timedelta(days=7, hours=4),
        )
    )
    assert [e.model_dump() for e in got] == [e.model_dump() for e in want.gap_events]
    assert sum(1 for c in scoring.items.values() if c.resting) > len(scoring.items) // 2
    assert scoring.snapshot(until).as_dict() == want.scoring.snapshot(until).as_dict()


# --- the external sort --------------------------------------------------------------------------


def test_external_sort_orders_by_event_time_then_line_and_cleans_up(
    week: list[bytes], tmp_path: Path
):
    grouped = sorted(week, key=lambda line: orjson.loads(line)["subject"])
    lines = [b"not json", *grouped, b"", b'{"type": "nope"}']
    with SortedLines(lines, memory_bytes=20_000, temp_dir=tmp_path) as ordered:
        out = list(ordered)
        assert ordered.runs > 10
        assert any(tmp_path.iterdir())
    assert not any(tmp_path.iterdir())
    assert [n for n, _ in out[:2]] == [1, len(lines)]  # unreadable times first, by line
    keys = [(event_time_key(line), n) for n, line in out]
    assert keys == sorted(keys) and keys[2][0] > UNSORTABLE
    assert sorted(line for _, line in out[2:]) == sorted(week)


# --- the command --------------------------------------------------------------------------------


def test_replay_streams_gap_events_and_writes_a_summary(week: list[bytes], tmp_path: Path):
    source = write(tmp_path / "in.jsonl", week)
    until = (START + timedelta(days=6, hours=1)).isoformat()
    run = replay_to(tmp_path, source, until, "--period", "week")
    assert run.returncode == 0, run.stderr
    gaps = [orjson.loads(line) for line in (tmp_path / "gaps.jsonl").read_bytes().splitlines()]
    assert gaps and all(g["type"].startswith("gapwatch.gap.") for g in gaps)
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["gap_events"] == len(gaps)
    assert summary["totals"]["period"] == "week"
    assert {p["period"] for p in summary["totals"]["periods"]} == {"2026-W13", "2026-W14"}
    assert summary["final"]["windows"] and summary["final"]["open"] is not None
    assert summary["rejected"] == {
        "lines": 0,
        "by_reason": {},
        "listed": [],
        "listed_limit": 1000,
    }
    assert summary["feedback"] == {"waiting": {}, "unjoined": {}}


def test_rejected_lines_exit_1_with_every_error_and_a_summary_by_reason(
    week: list[bytes], tmp_path: Path
):
    bad = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    bad["data"]["opened_at"] = "yesterday"
    bad["data"]["team"] = 7
    source = write(tmp_path / "in.jsonl", [*week[:50], orjson.dumps(bad), b"{"])
    rejects = tmp_path / "rejects.jsonl"
    summary_path = tmp_path / "summary.json"
    until = (START + timedelta(days=6)).isoformat()
    run = replay_to(tmp_path, source, until, "--rejects", str(rejects))
    assert run.returncode == 1, run.stderr
    assert "rejected 2 lines (schema_invalid: 1, malformed_json: 1)" in run.stderr
    assert (tmp_path / "gaps.jsonl").stat().st_size > 0  # the valid lines were scored
    listed = orjson.loads(summary_path.read_bytes())["rejected"]["listed"]
    assert [(r["line"], r["reason"]) for r in listed] == [
        (51, "schema_invalid"),
        (52, "malformed_json"),
    ]
    paths = {e["path"] for e in listed[0]["errors"]}
    assert {"data.opened_at", "data.team"} <= paths
    written = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [r["errors"] for r in written] == [r["errors"] for r in listed]
    assert written[1]["raw"] == "{"


def test_a_file_grouped_by_item_needs_sort_and_says_so(week: list[bytes], tmp_path: Path):
    ordered = write(tmp_path / "ordered.jsonl", week)
    grouped = write(
        tmp_path / "grouped.jsonl",
        sorted(week, key=lambda line: orjson.loads(line)["subject"]),
    )
    until = (START + timedelta(days=6, hours=1)).isoformat()

    def run(path: Path, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return gapwatch(
            "replay", str(path), "--until", until, "-o", str(tmp_path / name), "-q", *extra
        )

    late = run(grouped, "late.jsonl")
    assert late.returncode == 1
    assert "too_late" in late.stderr and "--sort" in late.stderr
    want = run(ordered, "want.jsonl")
    got = run(grouped, "got.jsonl", "--sort", "--sort-memory-mb", "1", "--sort-dir", str(tmp_path))
    assert (want.returncode, got.returncode) == (0, 0), got.stderr
    assert (tmp_path / "got.jsonl").read_bytes() == (tmp_path / "want.jsonl").read_bytes()


def test_the_default_policies_do_not_depend_on_the_current_directory(
    week: list[bytes], tmp_path: Path
):
    source = write(tmp_path / "in.jsonl", week[:100])
    until = (START + timedelta(days=6)).isoformat()
    run = gapwatch("replay", str(source), "--until", until, "-o", "-", "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("\n") > 0
    shown = gapwatch("replay", "--help", cwd=tmp_path).stdout
    assert f"(default: the repository's, {POLICIES})" in shown


@pytest.mark.parametrize("value", ["0", "many"])
def test_a_bad_sort_memory_is_a_usage_error(tmp_path: Path, value: str):
    run = gapwatch("replay", str(tmp_path / "none"), "--sort-memory-mb", value)
    assert run.returncode == 2 and "Traceback" not in run.stderr

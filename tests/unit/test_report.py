"""`gapwatch report servicenow`: numbers checked by hand on a small synthetic incident log."""

from __future__ import annotations

from pathlib import Path

import pytest

from gapwatch.cli import main
from gapwatch.config import load_policies
from gapwatch.importers import ImportOptions
from gapwatch.report import Tally, render, servicenow_report
from tests.unit.test_import_servicenow import POLICIES, ROOT, csv_text, snapshots


def incident(number: str, priority: str, made_sla: str, *rows: tuple[str, str, int]):
    out = snapshots(*rows, number=number, priority=priority, opened_at="1/3/2016 00:00")
    out[-1]["made_sla"] = made_sla  # the source's verdict is its last row's
    return out


def log() -> list[dict[str, str]]:
    """Five incidents; targets (servicenow-policies.yaml, 24x7): critical 4h, moderate 3 days.

    A  critical, resolved after 3h                          -> met;    source made   -> agree
    B  critical, resolved after 5h                          -> missed; source made   -> gw stricter
    C  critical, waiting 01:00-04:00, resolved 06:00 (3h)   -> met;    source missed -> gw lenient
    D  moderate, resolved after 1 day (met), reopened, resolved 4 days later (missed)
                                                            -> missed; source missed -> agree
    E  moderate, closed unresolved after 1h                 -> no verdict; source made
    """
    rows = [
        *incident(
            "A",
            "1 - Critical",
            "true",
            ("Resolved", "1/3/2016 03:00", 1),
            ("Closed", "6/3/2016 03:00", 2),
        ),
        *incident(
            "B",
            "1 - Critical",
            "true",
            ("Active", "1/3/2016 00:10", 1),
            ("Resolved", "1/3/2016 05:00", 2),
            ("Closed", "6/3/2016 05:00", 3),
        ),
        *incident(
            "C",
            "1 - Critical",
            "false",
            ("Active", "1/3/2016 00:10", 1),
            ("Awaiting User Info", "1/3/2016 01:00", 2),
            ("Active", "1/3/2016 04:00", 3),
            ("Resolved", "1/3/2016 06:00", 4),
            ("Closed", "6/3/2016 06:00", 5),
        ),
        *incident(
            "D",
            "3 - Moderate",
            "false",
            ("Resolved", "2/3/2016 00:00", 1),
            ("Active", "3/3/2016 00:00", 2),
            ("Resolved", "7/3/2016 00:00", 3),
            ("Closed", "12/3/2016 00:00", 4),
        ),
        *incident(
            "E",
            "3 - Moderate",
            "true",
            ("Closed", "1/3/2016 01:00", 1),
        ),
    ]
    for row in rows:
        if row["number"] == "D" and row["sys_mod_count"] in ("2", "3", "4"):
            row["reopen_count"] = "1"
    return rows


@pytest.fixture
def report_file(tmp_path: Path) -> Path:
    path = tmp_path / "log.csv"
    path.write_text(csv_text(log()))
    return path


def figures(t: Tally) -> dict[str, int]:
    return {
        "items": t.items,
        "met": t.met,
        "breached": t.breached,
        "source_made": t.source_made,
        "compared": t.compared,
        "agree": t.agree,
        "gw_met_src_missed": t.gapwatch_met_source_missed,
        "gw_missed_src_met": t.gapwatch_missed_source_met,
        "no_verdict": t.no_verdict,
    }


def test_the_numbers_by_hand(report_file: Path):
    report = servicenow_report(
        report_file, ImportOptions(policies=load_policies(POLICIES)), progress=False
    )
    c = report.comparison
    assert figures(c.groups["1 - Critical"]) == {
        "items": 3,
        "met": 2,  # A, C
        "breached": 1,  # B
        "source_made": 2,  # A, B
        "compared": 3,
        "agree": 1,  # A
        "gw_met_src_missed": 1,  # C
        "gw_missed_src_met": 1,  # B
        "no_verdict": 0,
    }
    assert figures(c.groups["3 - Moderate"]) == {
        "items": 2,
        "met": 1,  # D's first cycle
        "breached": 1,  # D's second cycle: 4 days against 3
        "source_made": 1,  # E
        "compared": 1,  # D; E was never judged by gapwatch
        "agree": 1,
        "gw_met_src_missed": 0,
        "gw_missed_src_met": 0,
        "no_verdict": 1,
    }
    total = c.total
    assert (total.attainment, total.made_sla_share, total.agreement) == (3 / 5, 3 / 5, 2 / 4)
    assert c.groups["1 - Critical"].attainment == pytest.approx(2 / 3)
    assert c.groups["3 - Moderate"].made_sla_share == 1 / 2
    assert (c.paused, c.not_paused) == ((1, 0), (3, 2))  # C paused; A, B, D not
    assert (c.reopened, c.not_reopened) == ((1, 1), (3, 1))  # D reopened
    assert report.rejected == {} and not report.stats.invalid

    text = render(report)
    assert "1 - Critical           3       2         1       66.7%     66.7%      33.3%" in text
    assert "3 - Moderate           2       1         1       50.0%     50.0%     100.0%" in text
    assert "all                    5       3         2       60.0%     60.0%      50.0%" in text
    prose = " ".join(text.split())  # the explanation is wrapped
    assert "1 - Critical 4h, 2 - High 8h, 3 - Moderate 3d, 4 - Low 5d, other 3d" in prose
    assert "Agreement with a pause 0.0% of 1, without 66.7% of 3" in prose
    assert "reopened incidents 100.0% of 1, others 33.3% of 3" in prose
    assert "1 are gapwatch stricter than the source and 1 more lenient" in prose


def test_limit_scores_only_the_first_incidents(report_file: Path):
    options = ImportOptions(policies=load_policies(POLICIES), limit=2)
    report = servicenow_report(report_file, options, progress=False)
    assert figures(report.comparison.total)["items"] == 2
    assert "(first 2 incidents)" in render(report)


def test_the_cli_prints_the_report(
    report_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.chdir(ROOT)  # the default policies file is relative to the repository
    with pytest.raises(SystemExit) as done:
        main(["report", "servicenow", str(report_file), "-q"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("Resolution SLA: gapwatch (assumed targets) vs the source's made_sla")
    assert "Why they differ:" in out

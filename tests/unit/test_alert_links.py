"""Alerts link to the runbook and to the team's dashboard, built from settings (issue 24)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gapwatch.config import load_alerts
from gapwatch.core.alerts.lifecycle import Alert, AlertState, Verdict, advance
from gapwatch.core.alerts.links import filled, joined
from gapwatch.core.alerts.rules import Severity

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "config" / "alerts.yaml"
GRAFANA = "https://grafana.example.com/"
RUNBOOKS = "https://docs.example.com/gapwatch"


@pytest.mark.parametrize(
    ("base", "link", "expected"),
    [
        (GRAFANA, "d/gapwatch-overview", "https://grafana.example.com/d/gapwatch-overview"),
        (GRAFANA, "/d/x", "https://grafana.example.com/d/x"),
        (GRAFANA, "https://other.example.com/d/x", "https://other.example.com/d/x"),
        ("", "d/gapwatch-overview", "d/gapwatch-overview"),
        (GRAFANA, "", ""),
    ],
)
def test_relative_links_are_joined_to_their_base(base: str, link: str, expected: str):
    assert joined(base, link) == expected


def test_dashboard_links_carry_the_alert_labels_as_grafana_variables():
    labels = {"team": "billing & co", "region": "eu"}
    assert filled("https://g/d/x", labels, dashboard=True) == (
        "https://g/d/x?var-region=eu&var-team=billing+%26+co"
    )
    # Set already in the link: kept; a fragment stays last; placeholders fill in.
    assert filled("https://g/d/x?orgId=1&var-team=all#panel-4", labels, dashboard=True) == (
        "https://g/d/x?orgId=1&var-team=all&var-region=eu#panel-4"
    )
    assert filled("https://w/{team}/{missing}", labels, dashboard=False) == (
        "https://w/billing%20%26%20co/{missing}"
    )


def test_a_page_names_the_teams_dashboard_and_a_runbook_one_can_open():
    config = load_alerts(ALERTS).with_link_bases(RUNBOOKS, GRAFANA)
    rule = next(r for r in config.rules if r.name == "first-response-burn")
    now = datetime(2026, 12, 5, 9, tzinfo=UTC)
    alert = Alert.new(rule.name, {"team": "billing"})
    verdict = Verdict(True, Severity.PAGE, "burning")
    _, moved = advance(alert, verdict, now, rule)
    assert moved and moved[-1].to_state in (AlertState.PENDING, AlertState.FIRING)
    t = moved[-1]
    assert t.runbook_url == "https://docs.example.com/gapwatch/docs/runbooks/first-response-burn.md"
    assert t.dashboard_url == "https://grafana.example.com/d/gapwatch-overview?var-team=billing"


def test_no_shipped_config_points_at_loopback_outside_local_development():
    for rule in load_alerts(ALERTS).rules:
        assert "127.0.0.1" not in rule.dashboard_url + rule.runbook_url, rule.name

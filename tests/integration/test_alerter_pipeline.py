"""The whole pipeline: team-slip simulator → ingest → scorer → alerter → webhook and Alertmanager.

The simulator runs 240x faster than the wall clock (an hour of event time in 15 s), so the SRE
workbook's 1h/5m and 6h/30m burn windows are crossed within a test's minutes. Windows, `for` and
`hold` all run on event time (the alerter's clock follows the scorer's snapshots when they run
ahead), so the same rule means the same thing here and in production.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gapwatch.kafka.settings import KafkaSettings
from tests.integration.alerter_support import (
    FlakyWebhook,
    eventually,
    fresh_schema,
    start_alerter,
    write_rules,
)
from tests.integration.conftest import (
    TOKEN,
    Alertmanager,
    IngestProcess,
    start_ingest,
    stop_process,
)
from tests.integration.scorer_support import start_scorer

pytestmark = pytest.mark.timeout(480)

SPEED = 240  # simulated seconds per wall-clock second
AHEAD = "172800"
"""GAPWATCH_MAX_FUTURE_SKEW_SECONDS of every service: event time runs ahead of the wall clock."""
POLICIES = """
version: 1
defaults:
  calendar: 24x7
  pause_statuses: [awaiting_customer]
  replies: {authors: [agent], visibilities: [public]}
calendars: []
policies:
  - name: test-all
    match: {}
    promises:
      first_response: {within: 2h}
"""


@pytest.fixture
def ingest(kafka: KafkaSettings, tmp_path: Path) -> Iterator[IngestProcess]:
    """The ingest service, accepting event times as far ahead as the simulation runs."""
    service = start_ingest(kafka, tmp_path, GAPWATCH_MAX_FUTURE_SKEW_SECONDS=AHEAD)
    yield service
    stop_process(service.process)


def slip_rule() -> dict[str, object]:
    return {
        "name": "first-response-burn",
        "promise_kinds": ["first_response"],
        "group_by": ["team"],
        "condition": {"type": "burn_rate", "objective": 0.95, "min_events": 20},
        "for": "2m",
        "hold": "10m",
    }


async def am_alerts(am: Alertmanager) -> list[dict[str, object]]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{am.url}/api/v2/alerts", params={"active": "true"})
        response.raise_for_status()
        return list(response.json())


async def test_team_slip_pages_the_slipping_team_once_and_resolves(
    kafka: KafkaSettings, ingest: IngestProcess, alertmanager: Alertmanager, tmp_path: Path
) -> None:
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICIES)
    hook = FlakyWebhook(fail_first=2)
    await hook.start()
    rules = write_rules(
        tmp_path / "alerts.yaml",
        [slip_rule()],
        [
            {
                "name": "hook",
                "type": "webhook",
                "url": hook.url,
                "secret_env": "GAPWATCH_WEBHOOK_SECRET",
            },
            {"name": "am", "type": "alertmanager", "url": alertmanager.url},
        ],
    )
    scorer = await asyncio.to_thread(
        start_scorer,
        kafka,
        tmp_path,
        "pipeline",
        GAPWATCH_SCORER_POLICIES_FILE=str(policies),
        GAPWATCH_SCORER_WINDOWS_LEAD_SECONDS="172800",
        GAPWATCH_MAX_FUTURE_SKEW_SECONDS=AHEAD,
    )
    simulator = None
    async with fresh_schema() as schema:
        alerter = await asyncio.to_thread(
            start_alerter,
            kafka,
            tmp_path,
            schema,
            rules,
            # 1 s of wall time is 4 minutes of event time: snapshots a few seconds apart must
            # not count as stale.
            GAPWATCH_ALERTER_STALE_SECONDS="3600",
            GAPWATCH_MAX_FUTURE_SKEW_SECONDS=AHEAD,
        )
        try:
            with (tmp_path / "simulate.log").open("wb") as log:
                simulator = subprocess.Popen(  # noqa: ASYNC220 - returns at once; polled below
                    [
                        sys.executable,
                        "-m",
                        "gapwatch",
                        "simulate",
                        "--scenario=team-slip",
                        f"--to={ingest.url}",
                        "--rate=300",
                        "--minutes=3",
                        f"--speed={SPEED}",
                        "--slip-team=billing",
                        "--slip-start=0.5",  # event hours 2 to 8
                        "--slip-end=2",
                        "--seed=7",
                    ],
                    env={**os.environ, "GAPWATCH_INGEST_TOKEN": TOKEN},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )

            def pages() -> list[dict[str, object]]:
                return [
                    r.body["transition"]
                    for r in hook.accepted()
                    if r.body["transition"]["to_state"] == "firing"
                    and r.body["transition"]["severity"] == "page"
                ]

            await eventually(pages, 180, "the page for the slipping team")
            firing = alerter.alerts(state="firing")
            assert [a["labels"] for a in firing] == [{"team": "billing"}]
            assert firing[0]["figures"]["burn_rate_long"] >= 14.4
            assert firing[0]["latest_breached"], "the page names breached tickets"

            def in_alertmanager(alerts: list[dict[str, object]]) -> bool:
                return any(
                    a["labels"].get("alertname") == "first-response-burn"  # type: ignore[union-attr]
                    and a["labels"].get("team") == "billing"  # type: ignore[union-attr]
                    for a in alerts
                )

            async def am_shows_it() -> bool:
                return in_alertmanager(await am_alerts(alertmanager))

            await eventually(am_shows_it, 30, "Alertmanager to show the alert")

            def resolved() -> bool:
                return any(r.body["transition"]["to_state"] == "resolved" for r in hook.accepted())

            await eventually(resolved, 240, "the resolve after recovery")
            assert simulator.wait(120) == 0, (tmp_path / "simulate.log").read_text()

            async def am_cleared() -> bool:
                return not in_alertmanager(await am_alerts(alertmanager))

            await eventually(am_cleared, 30, "Alertmanager to drop the resolved alert")
            transitions = [r.body["transition"] for r in hook.accepted()]
            teams = Counter(t["labels"]["team"] for t in transitions)
            assert set(teams) == {"billing"}, f"only the slipping team alerts: {teams}"
            assert len(pages()) == 1, "exactly one page"
            assert [t["to_state"] for t in transitions].count("resolved") == 1
            ids = hook.accepted_ids()
            assert len(ids) == len(set(ids)), "no notification twice"
        finally:
            if simulator is not None and simulator.poll() is None:
                simulator.kill()
                simulator.wait(10)
            stop_process(alerter.process)
            stop_process(scorer.process)
            await hook.stop()

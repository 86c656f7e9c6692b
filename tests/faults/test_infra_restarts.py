"""The Kafka broker and PostgreSQL restarted while a team slips: nothing is lost or repeated.

The same team-slip stream as `test_process_kills.py`, through ingest → scorer → alerter → a
dedup-keyed webhook. Mid-stream the broker is stopped and started again (the ingest answers 503
meanwhile and the client retries the same events); once the page is out, PostgreSQL is stopped
and started again under the alerter. After recovery every event the ingest accepted is in Kafka,
the gap events and 7-day windows equal `gapwatch replay` of the same input, and the alert
history is the slipping team's one page and one resolve, each transition delivered once per id.

Scorer with GAPWATCH_SCORER_WALL_CLOCK=false, so that live output can equal replay exactly (see
`test_process_kills.py`). Both faults stop shared infrastructure: the tests are `disruptive`
(they run last) and leave the broker and PostgreSQL running and ready, whatever happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gapwatch.kafka.settings import KafkaSettings
from tests.faults.support import (
    KAFKA_SCRIPT,
    POSTGRES_SCRIPT,
    Feed,
    Figures,
    check_everything,
    infra,
    infra_ready,
    pipeline,
    team_slip_input,
)
from tests.integration.alerter_support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.disruptive, pytest.mark.timeout(480)]


@pytest.fixture(autouse=True)
def infra_restored() -> Iterator[None]:
    """Whatever the test does or fails at, the broker and PostgreSQL are up and ready after."""
    try:
        yield
    finally:
        infra_ready()


def readiness(url: str) -> int:
    try:
        return httpx.get(url + "/readyz", timeout=5).status_code
    except httpx.TransportError:
        return 0


async def test_broker_and_postgres_restarts_mid_stream(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    stream = team_slip_input(kafka, tmp_path)
    figures = Figures()
    async with pipeline(kafka, tmp_path, stream) as rig:
        feed = Feed(stream, rig.ingest.url)
        feeding = asyncio.create_task(feed.run())
        try:
            # The broker, early in the slip: billing's first responses are running late.
            await feed.reached(hours=1.25)
            failed_before = sum(feed.failures.values())
            await asyncio.to_thread(infra, KAFKA_SCRIPT, "stop")
            try:
                await eventually(
                    lambda: sum(feed.failures.values()) > failed_before, 30, "a refused request"
                )
            finally:
                await asyncio.to_thread(infra, KAFKA_SCRIPT, "start")

            # PostgreSQL, mid-incident: the page is out, the resolve is still to come.
            await eventually(rig.pages, 150, "the page for the slipping team")
            assert not rig.resolved()
            await asyncio.to_thread(infra, POSTGRES_SCRIPT, "stop")
            try:

                async def alerter_unready() -> bool:
                    return await asyncio.to_thread(readiness, rig.alerter.url) == 503

                await eventually(alerter_unready, 30, "the alerter to notice")
            finally:
                await asyncio.to_thread(infra, POSTGRES_SCRIPT, "start")

            await feeding
        finally:
            if not feeding.done():
                feeding.cancel()
        for what in ("ingest", "scorer", "alerter"):
            process = getattr(rig, what).process
            assert process.poll() is None, f"the {what} survives: exit {process.returncode}"
        figures["faults"] = ["broker restart", "postgres restart"]
        try:
            await check_everything(rig, feed, figures)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nfigures: {figures}\n{rig.logs()}") from None
    print(f"\nfigures: {figures}")

"""kill -9 of the scorer, the ingest service and the alerter while a team slips: nothing is lost.

One team-slip stream is posted over HTTP to ingest → scorer → alerter → a dedup-keyed webhook.
Mid-stream the scorer is killed with SIGKILL and restarted on its RocksDB store; then the ingest
service, with a request in flight, restarted on the same port (the client retries the same
events); then, once the page is out, the alerter, restarted on its schema. After recovery every
event the ingest accepted is in Kafka, the gap events and 7-day windows equal `gapwatch replay`
of the same input (at-least-once: repeats only under the same id and content), and the alert
history is what the input makes inevitable: the slipping team paged once and resolved, no other
team alerted, each transition delivered once per id.

The scorer runs with GAPWATCH_SCORER_WALL_CLOCK=false: timers fire on each partition's event time
only, exactly as replay fires them, so live output can be compared with replay one for one. With
the wall clock on, a partition that falls behind during a fault has its timers fired from the
wall clock (right for live operation, but not what replay of the same input does).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gapwatch.kafka.settings import KafkaSettings
from tests.faults.support import Feed, Figures, check_everything, pipeline, team_slip_input
from tests.integration.alerter_support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]


async def test_kill_9_scorer_ingest_and_alerter_mid_stream(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    stream = team_slip_input(kafka, tmp_path)
    figures = Figures()
    async with pipeline(kafka, tmp_path, stream) as rig:
        feed = Feed(stream, rig.ingest.url)
        feeding = asyncio.create_task(feed.run())
        try:
            # The scorer, early in the slip: billing's first responses are running late, and its
            # catch-up (hours of event time in seconds) is over before the breaches begin.
            await feed.reached(hours=1.25)
            rig.kill("scorer")
            await rig.restart("scorer")

            # The ingest service, with a request in flight: the client gets no answer for it.
            await feed.reached(hours=2.5)
            feed.interrupt_next_request(lambda: rig.kill("ingest"))
            await eventually(lambda: feed.in_flight_at_kill, 30, "a request in flight")
            await rig.restart("ingest")

            # The alerter, mid-incident: the page is out, the resolve is still to come.
            await eventually(rig.pages, 120, "the page for the slipping team")
            assert not rig.resolved()
            rig.kill("alerter")
            await rig.restart("alerter")

            await feeding
        finally:
            if not feeding.done():
                feeding.cancel()
        # The restarted scorer resumed from its store and rebuilt its windows from the gap history.
        assert "restored" in rig.scorer.log() and "rebuilt windows" in rig.scorer.log()
        figures["faults"] = ["scorer kill -9", "ingest kill -9", "alerter kill -9"]
        figures["in_flight_at_ingest_kill"] = len(feed.in_flight_at_kill or [])
        try:
            await check_everything(rig, feed, figures)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nfigures: {figures}\n{rig.logs()}") from None
    print(f"\nfigures: {figures}")

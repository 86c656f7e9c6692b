"""PostgreSQL restarted under a running alerter: it waits, catches up, and loses nothing."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import pytest

from gapwatch.core.alerts.events import AlertEvent
from gapwatch.core.topics import Stream
from gapwatch.kafka.settings import KafkaSettings
from tests.integration.alerter_support import alerter_rig, eventually, publish_round
from tests.integration.conftest import REPO, read_topic
from tests.integration.test_alerter_live import HEALTHY, SLIPPING, WINDOWS

pytestmark = [pytest.mark.integration, pytest.mark.disruptive, pytest.mark.timeout(300)]

POSTGRES = REPO / "deploy" / "local" / "postgres.sh"


def postgres(action: str) -> None:
    done = subprocess.run(
        ["bash", str(POSTGRES), action], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"postgres.sh {action}: {done.stderr}"


def readiness(url: str) -> int:
    try:
        return httpx.get(url + "/readyz", timeout=5).status_code
    except httpx.TransportError:
        return 0


async def test_postgres_restart_mid_incident_loses_and_repeats_nothing(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    async with alerter_rig(kafka, tmp_path) as rig:
        await publish_round(kafka, SLIPPING, WINDOWS)
        await eventually(lambda: rig.states().get("firing") == 1, 60, "the page")
        await asyncio.to_thread(postgres, "stop")
        try:

            async def unready() -> bool:
                return await asyncio.to_thread(readiness, rig.alerter.url) == 503

            await eventually(unready, 30, "readyz to say 503")
            # The recovery arrives while PostgreSQL is down: it cannot be committed yet.
            await publish_round(kafka, HEALTHY, WINDOWS)
            await asyncio.sleep(3.0)
            assert rig.alerter.process.poll() is None, "the alerter survives the outage"
            assert "resolved" not in rig.states()
        finally:
            await asyncio.to_thread(postgres, "start")
        await eventually(lambda: rig.states().get("resolved") == 1, 90, "resolve")
        await asyncio.sleep(1.5)
        ids = rig.hook.accepted_ids()
        assert len(ids) == len(set(ids)) == 2
        records = await read_topic(kafka, Stream.ALERTS, expected=3, timeout=30)
        events = [AlertEvent.model_validate_json(r.value) for r in records]
        assert [e.data.to_state.value for e in events] == ["pending", "firing", "resolved"]
        assert len({e.id for e in events}) == 3

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
from tests.integration.alerter_support import (
    FlakyWebhook,
    eventually,
    fresh_schema,
    publish_round,
    start_alerter,
    write_rules,
)
from tests.integration.conftest import REPO, read_topic, stop_process
from tests.integration.test_alerter_live import (
    HEALTHY,
    SLIPPING,
    WINDOWS,
    burn_rule,
    firing_and_resolved,
    webhook_receiver,
)

pytestmark = [pytest.mark.integration, pytest.mark.disruptive, pytest.mark.timeout(300)]

POSTGRES = REPO / "deploy" / "local" / "postgres.sh"


def postgres(action: str) -> None:
    done = subprocess.run(
        ["bash", str(POSTGRES), action], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"postgres.sh {action}: {done.stderr}"


def ready(url: str) -> int:
    try:
        return httpx.get(url + "/readyz", timeout=5).status_code
    except httpx.TransportError:
        return 0


async def test_postgres_restart_mid_incident_loses_and_repeats_nothing(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    hook = FlakyWebhook()
    await hook.start()
    rules = write_rules(tmp_path / "alerts.yaml", [burn_rule()], [webhook_receiver(hook.url)])
    async with fresh_schema() as schema:
        alerter = await asyncio.to_thread(start_alerter, kafka, tmp_path, schema, rules)
        try:
            await publish_round(kafka, SLIPPING, WINDOWS)
            await eventually(lambda: firing_and_resolved(hook)["firing"] == 1, 60, "the page")
            await asyncio.to_thread(postgres, "stop")
            try:

                async def unready() -> bool:
                    return await asyncio.to_thread(ready, alerter.url) == 503

                await eventually(unready, 30, "readyz to say 503")
                # The recovery arrives while PostgreSQL is down: it cannot be committed yet.
                await publish_round(kafka, HEALTHY, WINDOWS)
                await asyncio.sleep(3.0)
                assert alerter.process.poll() is None, "the alerter survives the outage"
                assert firing_and_resolved(hook)["resolved"] == 0
            finally:
                await asyncio.to_thread(postgres, "start")
            await eventually(lambda: firing_and_resolved(hook)["resolved"] == 1, 90, "resolve")
            await asyncio.sleep(1.5)
            ids = hook.accepted_ids()
            assert len(ids) == len(set(ids)) == 2
            records = await read_topic(kafka, Stream.ALERTS, expected=3, timeout=30)
            events = [AlertEvent.model_validate_json(r.value) for r in records]
            assert [e.data.to_state.value for e in events] == ["pending", "firing", "resolved"]
            assert len({e.id for e in events}) == 3
        finally:
            stop_process(alerter.process)
            await hook.stop()

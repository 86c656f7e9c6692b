"""The broker stops mid-stream: the ingest answers 503, and every 202 it gave is in Kafka."""

from __future__ import annotations

import asyncio
import copy
import subprocess
from typing import Any

import httpx
import orjson
import pytest

from gapwatch.core.examples import EXAMPLES
from gapwatch.core.topics import Stream
from gapwatch.kafka.settings import KafkaSettings
from tests.integration.conftest import REPO, end_offsets, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.disruptive]

KAFKA_SCRIPT = REPO / "deploy" / "local" / "kafka.sh"


def broker(action: str) -> None:
    subprocess.run(
        ["bash", str(KAFKA_SCRIPT), action], check=True, timeout=180, capture_output=True
    )


def batch(n: int, size: int = 20) -> list[dict[str, Any]]:
    events = []
    for i in range(size):
        doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.status_changed.v1"])
        doc["id"] = f"outage-{n}-{i}"
        doc["subject"] = doc["data"]["ticket_id"] = f"T-{n}-{i}"
        events.append(doc)
    return events


async def test_broker_stopped_mid_stream(client: httpx.AsyncClient, kafka: KafkaSettings):
    accepted: set[str] = set()
    statuses: list[int] = []
    n = 0

    async def post() -> httpx.Response:
        nonlocal n
        n += 1
        events = batch(n)
        response = await client.post("/v1/events", content=orjson.dumps(events))
        statuses.append(response.status_code)
        if response.status_code == 202:
            accepted.update(e["id"] for e in events)
        return response

    for _ in range(5):
        assert (await post()).status_code == 202

    await asyncio.to_thread(broker, "stop")
    try:
        # In-flight and new requests must not be acknowledged while the broker is gone.
        outage_responses = [await post() for _ in range(3)]
        assert [r.status_code for r in outage_responses] == [503, 503, 503]
        assert all(r.headers["retry-after"] == "5" for r in outage_responses)
        assert "nothing of this request was acknowledged" in outage_responses[0].json()["detail"]
        assert (await client.get("/readyz")).status_code == 503
    finally:
        await asyncio.to_thread(broker, "start")

    recovered = False
    for _ in range(30):
        if (await post()).status_code == 202:
            recovered = True
            break
        await asyncio.sleep(1)
    assert recovered, f"ingest did not recover after the broker restart: {statuses}"
    for _ in range(3):
        assert (await post()).status_code == 202
    assert (await client.get("/readyz")).status_code == 200

    # Events of 503 answers may or may not have reached Kafka (clients retry; ids dedup), but
    # every event of a 202 answer must be there.
    total = await end_offsets(kafka, (Stream.TICKETS,))
    records = await read_topic(kafka, Stream.TICKETS, total, timeout=60)
    in_kafka = {orjson.loads(r.value)["id"] for r in records}
    assert accepted <= in_kafka, sorted(accepted - in_kafka)[:10]
    assert statuses.count(202) == len(accepted) // 20

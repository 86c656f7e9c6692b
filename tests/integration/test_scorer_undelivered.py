"""The scorer's direct read of input records faust did not deliver, against the real broker.

The unit tests stub the read (`tests/unit/test_scorer_service.py`); this one checks it returns
exactly the records of the hole, in order, shaped for scoring, and scores them into the table.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from gapwatch.core.examples import EXAMPLES
from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.clients import consumer, reliable_producer
from gapwatch.kafka.settings import KafkaSettings
from gapwatch_scorer.app import ScorerService
from gapwatch_scorer.settings import ScorerSettings
from tests.scorer_stand_ins import MemoryItemStore, acknowledge_changelog_at_once

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


async def test_a_hole_in_delivery_is_read_from_the_broker_and_scored(kafka: KafkaSettings):
    tickets = topic_name(Stream.TICKETS, kafka.topic_prefix)
    producer = reliable_producer(kafka)
    await producer.start()
    try:
        for n in range(10):
            doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
            doc.update(id=f"hole-{n}", subject=f"T-H{n}")
            doc["data"]["ticket_id"] = f"T-H{n}"
            await producer.send_and_wait(
                tickets, orjson.dumps(doc), key=f"T-H{n}".encode(), partition=0
            )
    finally:
        await producer.stop()
    settings = ScorerSettings(
        scorer_policies_file=REPO / "deploy" / "config" / "policies.yaml",
        kafka_bootstrap=kafka.kafka_bootstrap,
        topic_prefix=kafka.topic_prefix,
    )
    service = ScorerService(settings, CollectorRegistry())
    acknowledge_changelog_at_once(service)

    found = await service._read_range(tickets, 0, 3, 7)
    assert [e.message.offset for e in found] == [3, 4, 5, 6]
    assert [orjson.loads(e.message.value)["id"] for e in found] == [
        f"hole-{n}" for n in range(3, 7)
    ]
    assert all(e.message.key == f"T-H{e.message.offset}".encode() for e in found)
    assert all(e.message.timestamp > 1e9 for e in found)  # seconds, as faust's

    # Where delivery resumes: the group's committed offset, asked of the broker.
    committer = consumer(kafka, group_id=service.group_id, enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([TopicPartition(tickets, 0)])
        await committer.commit({TopicPartition(tickets, 0): 4})
    finally:
        await committer.stop()
    assert await service.group_committed({(tickets, 0), (tickets, 1)}) == {
        (tickets, 0): 4,
        (tickets, 1): None,
    }

    # Delivered: offset 2, then 7 (3 to 6 skipped); they are read and scored before 7.
    async def produce(records: Any) -> None:
        pass

    service.produce = produce  # type: ignore[method-assign]

    async def committed(wanted: set[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        return dict.fromkeys(wanted, 2)

    service.committed = committed  # type: ignore[method-assign]
    table = MemoryItemStore()
    delivered = [
        e for e in await service._read_range(tickets, 0, 2, 8) if e.message.offset in (2, 7)
    ]
    await service.handle_inputs(delivered, table)  # type: ignore[arg-type]
    assert set(table.by_id) == {f"T-H{n}" for n in range(2, 8)}
    assert service.metrics.undelivered._value.get() == 4
    await service.stop()

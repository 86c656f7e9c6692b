"""Producing in one batch per partition: the same partitions as aiokafka's `send`, records in
order, and each partition's newest offset (the integration tests run it on the broker)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from gapwatch.kafka.batches import CLOUDEVENTS_HEADERS, key_partition, send_batches


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=48))
def test_a_key_goes_to_the_partition_aiokafkas_send_would_choose(key: bytes, count: int):
    ids = list(range(count))
    assert key_partition(key, ids) == DefaultPartitioner()(key, ids, ids)


@dataclass
class StandInBatch:
    room: int
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    headers: list[Any] = field(default_factory=list)

    def append(self, *, key: bytes, value: bytes, timestamp: None, headers: Any) -> object | None:
        if len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        self.headers.append(headers)
        return object()


class StandInProducer:
    """Batches of `room` records; a partition's log is the records in the order sent."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.logs: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
        self.headers: dict[str, list[Any]] = {}
        self.batches = 0

    def create_batch(self) -> StandInBatch:
        return StandInBatch(self.room)

    async def send_batch(self, batch: StandInBatch, topic: str, *, partition: int) -> Any:
        log = self.logs.setdefault((topic, partition), [])
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        ack.set_result(SimpleNamespace(offset=len(log)))  # the batch's base offset
        log.extend(batch.records)
        self.headers.setdefault(topic, []).extend(batch.headers)
        self.batches += 1
        return ack


async def test_records_go_in_order_in_as_few_batches_as_fit_and_the_newest_offsets_come_back():
    producer = StandInProducer(room=2)
    producer.logs[("t", 1)] = [(b"old", b"x")] * 5  # offsets 0-4 written before
    records = {
        ("t", 0): [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")],
        ("t", 1): [(b"d", b"4")],
        ("u", 0): [],
    }
    newest = await send_batches(producer, records)  # type: ignore[arg-type]
    assert producer.logs[("t", 0)] == records[("t", 0)]
    assert producer.logs[("t", 1)][5:] == records[("t", 1)]
    assert producer.batches == 3  # two for t/0 (room for 2), one for t/1, none for u/0
    assert newest == {("t", 0): 2, ("t", 1): 5}


async def test_a_record_no_fresh_batch_takes_is_an_error_not_a_loss():
    producer = StandInProducer(room=0)
    with pytest.raises(KafkaError, match="exceeds the batch size"):
        await send_batches(producer, {("t", 0): [(b"a", b"1")]})  # type: ignore[arg-type]


async def test_the_records_of_a_topic_carry_its_headers_and_others_none():
    """The CloudEvents Kafka binding: every record whose value is a CloudEvent says so."""
    producer = StandInProducer(room=2)
    records = {
        ("events", 0): [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")],
        ("state", 0): [(b"d", b"")],
    }
    await send_batches(producer, records, {"events": CLOUDEVENTS_HEADERS})  # type: ignore[arg-type]
    assert producer.headers["events"] == [list(CLOUDEVENTS_HEADERS)] * 3
    assert producer.headers["state"] == [None]
    assert dict(CLOUDEVENTS_HEADERS)["content-type"].startswith(b"application/cloudevents+json")

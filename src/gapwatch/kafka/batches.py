"""Producing records in one batch per partition instead of one `send` per record.

aiokafka's `send` makes a future and an accumulator append per record: 20-24 µs of CPU a
record, against 8 µs through `create_batch`/`send_batch` (idempotent, acks=all, this machine,
2026-11-24). Partitions are chosen with the Java client's murmur2 over the sorted partition
ids, as aiokafka's default partitioner does, so a key lands where `send` would have put it and
where other clients writing straight to Kafka put it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2


def key_partition(key: bytes, partitions: Sequence[int]) -> int:
    """The partition of `key` among a topic's sorted partition ids (aiokafka's default)."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


Headers = Sequence[tuple[str, bytes]]
Entry = tuple[bytes, bytes] | tuple[bytes, bytes, Headers]
"""(key, value), or (key, value, headers of this record alone)."""

CLOUDEVENTS_HEADERS: Headers = (("content-type", b"application/cloudevents+json; charset=utf-8"),)
"""The CloudEvents Kafka protocol binding's structured content mode: a record whose value is a
whole CloudEvent in JSON says so in its `content-type` header, so every CloudEvents SDK reads it."""


async def send_batches(
    producer: AIOKafkaProducer,
    records: Mapping[tuple[str, int], Sequence[Entry]],
    headers: Mapping[str, Headers] | None = None,
) -> dict[tuple[str, int], int]:
    """Send each (topic, partition)'s (key, value) records in order, in as few batches as they
    fit; wait for every acknowledgement; return the newest offset written to each partition.
    Records of a topic in `headers` carry those headers; a record with its own carries those."""
    sent = []
    for (topic, partition), entries in records.items():
        batch, count = producer.create_batch(), 0
        wanted = headers.get(topic) if headers else None
        extra = list(wanted) if wanted else None  # aiokafka's record builder takes a list
        for key, value, *own in entries:
            mine = list(own[0]) if own else extra
            if batch.append(key=key, value=value, timestamp=None, headers=mine) is None:
                sent.append(
                    (
                        topic,
                        partition,
                        count,
                        await producer.send_batch(batch, topic, partition=partition),
                    )
                )
                batch, count = producer.create_batch(), 0
                if batch.append(key=key, value=value, timestamp=None, headers=mine) is None:
                    raise KafkaError(f"a record of {len(value)} bytes exceeds the batch size")
            count += 1
        if count:
            sent.append(
                (
                    topic,
                    partition,
                    count,
                    await producer.send_batch(batch, topic, partition=partition),
                )
            )
    newest: dict[tuple[str, int], int] = {}
    for topic, partition, count, ack in sent:
        last = (await ack).offset + count - 1  # the batch's base offset, then one a record
        newest[topic, partition] = max(newest.get((topic, partition), -1), last)
    return newest

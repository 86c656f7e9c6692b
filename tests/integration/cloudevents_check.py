"""Reads gapwatch's Kafka records as a CloudEvents SDK does (the Kafka protocol binding)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord, TopicPartition
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka, to_structured
from cloudevents.core.formats.json import JSONFormat

from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.clients import consumer
from gapwatch.kafka.settings import KafkaSettings

STRUCTURED = "application/cloudevents+json"


def decoded(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[Any]:
    """Each record's CloudEvent, as the SDK's Kafka binding reads it; fails unless every record
    is in structured content mode (its content-type header says so) and its event, written
    back by the SDK, has the same attributes and data."""
    events = []
    for record in records:
        headers = {name: value for name, value in record.headers}
        assert headers.get("content-type", b"").decode().startswith(STRUCTURED), record.headers
        message = KafkaMessage(headers=headers, key=record.key, value=record.value or b"")
        event = from_kafka(message, JSONFormat())
        original = orjson.loads(record.value or b"{}")
        assert event.get_type() == original["type"]
        assert event.get_id() == original["id"]
        assert event.get_source() == original["source"]
        assert event.get_subject() == original.get("subject")
        again = orjson.loads(to_structured(event, JSONFormat()).value)
        assert again["data"] == original["data"], record
        events.append(event)
    return events


async def read_all(settings: KafkaSettings, stream: Stream) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a stream's topic up to its end now (tombstones left out)."""
    topic = topic_name(stream, settings.topic_prefix)
    reader = consumer(settings, topic, auto_offset_reset="earliest", enable_auto_commit=False)
    await reader.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        parts = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        ends = await reader.end_offsets(parts)

        async def behind() -> bool:
            return any([await reader.position(tp) < end for tp, end in ends.items()])

        while await behind():
            batch = await reader.getmany(timeout_ms=1000)
            for part in batch.values():
                records.extend(r for r in part if r.value is not None)
    finally:
        await reader.stop()
    return records

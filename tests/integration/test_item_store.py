"""The scorer's item databases recovered from a real items changelog."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.admin import NewTopic

from gapwatch.kafka.clients import admin_client, reliable_producer
from gapwatch.kafka.settings import KafkaSettings
from gapwatch_scorer.item_store import RocksItemStore, item_key

pytestmark = pytest.mark.integration


async def make_topic(kafka: KafkaSettings, name: str) -> None:
    admin = admin_client(kafka)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, 2, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()


async def send(
    kafka: KafkaSettings, topic: str, records: list[tuple[int, str, bytes | None]]
) -> None:
    producer = reliable_producer(kafka)
    await producer.start()
    try:
        for partition, item, value in records:
            await producer.send_and_wait(topic, value, key=item_key(item), partition=partition)
    finally:
        await producer.stop()


async def test_a_partition_is_recovered_from_its_persisted_offset_to_the_changelogs_end(
    kafka: KafkaSettings, tmp_path: Path
):
    topic = f"{kafka.topic_prefix}items-changelog"
    await make_topic(kafka, topic)
    await send(
        kafka,
        topic,
        [(0, "A", b"a1"), (0, "B", b"b1"), (1, "C", b"c1"), (0, "A", b"a2"), (0, "B", None)],
    )
    store = RocksItemStore(tmp_path, topic)
    assert await store.recover(kafka, {0}) == {0: 4}
    assert store.held == {0}
    assert dict(store.saved(0)) == {item_key("A"): b"a2"}  # B's tombstone deleted it
    assert store.persisted_offset(0) == 3
    store.close({0})

    # A worker that held it before (its database still on disk) reads only what came since.
    await send(kafka, topic, [(0, "D", b"d1"), (0, "A", b"a3")])
    store = RocksItemStore(tmp_path, topic)
    assert await store.recover(kafka, {0, 1}) == {0: 2, 1: 1}  # only what came since
    assert dict(store.saved(0)) == {item_key("A"): b"a3", item_key("D"): b"d1"}
    assert dict(store.saved(1)) == {item_key("C"): b"c1"}
    assert store.persisted_offset(0) == 5 and store.persisted_offset(1) == 0
    assert await store.recover(kafka, {0}) == {0: 0}  # up to date: nothing read
    store.close(store.held)


async def test_a_database_ahead_of_its_changelog_is_rebuilt_from_it(
    kafka: KafkaSettings, tmp_path: Path
):
    """A persisted offset past the changelog's end: the topic was deleted and made again (its
    offsets started over), so what the database holds belongs to the old one."""
    topic = f"{kafka.topic_prefix}items-changelog"
    await make_topic(kafka, topic)
    await send(kafka, topic, [(0, "NEW", b"n1")])
    store = RocksItemStore(tmp_path, topic)
    store._open(0)
    store.write(0, [(item_key("OLD"), b"o9")], offset=41)
    assert await store.recover(kafka, {0}) == {0: 1}
    assert dict(store.saved(0)) == {item_key("NEW"): b"n1"}
    assert store.persisted_offset(0) == 0
    store.close(store.held)

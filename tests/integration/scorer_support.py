"""Helpers for scorer tests: start workers, feed a stream, read a topic to the end."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import orjson
from aiokafka.partitioner import murmur2

from gapwatch.kafka.settings import KafkaSettings
from tests.integration.conftest import free_port, spawn, wait_until_ready


@dataclass
class ScorerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=10).text


def start_scorer(kafka: KafkaSettings, work: Path, name: str, **env: str) -> ScorerProcess:
    port = free_port()
    log_path = work / f"scorer-{name}.log"
    environment = {
        **os.environ,
        "GAPWATCH_KAFKA_BOOTSTRAP": kafka.kafka_bootstrap,
        "GAPWATCH_TOPIC_PREFIX": kafka.topic_prefix,
        "GAPWATCH_KAFKA_PARTITIONS": str(kafka.kafka_partitions),
        "GAPWATCH_SCORER_PORT": str(port),
        "GAPWATCH_SCORER_DATA_DIR": str(work / f"state-{name}"),
        "GAPWATCH_SCORER_SNAPSHOT_SECONDS": "1",
        **env,
    }
    process = spawn("gapwatch_scorer", environment, log_path)
    scorer = ScorerProcess(f"http://127.0.0.1:{port}", process, log_path)
    wait_until_ready("scorer", process, log_path, lambda: "Worker ready" in scorer.log(), 90)
    return scorer


def flush_events(at: datetime, partitions: int, tag: str) -> list[bytes]:
    """One ticket per partition at `at`, so every partition's watermark reaches the same time."""
    from gapwatch.core.examples import EXAMPLES

    events = []
    wanted = set(range(partitions))
    n = 0
    while wanted:
        item = f"FLUSH-{tag}-{n}"
        n += 1
        partition = (murmur2(item.encode()) & 0x7FFFFFFF) % partitions
        if partition not in wanted:
            continue
        wanted.discard(partition)
        doc = orjson.loads(orjson.dumps(EXAMPLES["gapwatch.ticket.closed.v1"]))
        doc.update(id=f"flush-{item}", subject=item, time=at.isoformat())
        doc["data"].update(ticket_id=item, closed_at=at.isoformat())
        events.append(orjson.dumps(doc))
    return events


def bulk_load(kafka: KafkaSettings, path: Path) -> None:
    env = {
        **os.environ,
        "GAPWATCH_KAFKA_BOOTSTRAP": kafka.kafka_bootstrap,
        "GAPWATCH_TOPIC_PREFIX": kafka.topic_prefix,
    }
    out = subprocess.run(
        [sys.executable, "-m", "gapwatch", "ingest", str(path), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr


async def saved_items_and_changelog(
    kafka: KafkaSettings, work: Path, name: str
) -> tuple[
    dict[int, tuple[dict[bytes, bytes], int | None]], dict[int, tuple[dict[bytes, bytes], int]]
]:
    """A stopped worker's local item store, and the items changelog, per partition.

    Local: (key → value, persisted offset) from each partition's RocksDB. Changelog: (key → its
    newest value, newest offset) per partition.
    """
    from aiokafka import TopicPartition

    from gapwatch.kafka.clients import consumer
    from gapwatch_scorer.item_store import RocksItemStore
    from gapwatch_scorer.settings import ScorerSettings

    topic = f"{kafka.topic_prefix}{ScorerSettings().scorer_app_id}-items-changelog"
    store = RocksItemStore(work / f"state-{name}" / "items", topic)
    local: dict[int, tuple[dict[bytes, bytes], int | None]] = {}
    for number in range(kafka.kafka_partitions):
        if (store.directory / f"partition-{number}").exists():
            store._open(number)
            local[number] = (dict(store.saved(number)), store.persisted_offset(number))
    store.close(store.held)
    reader = consumer(kafka, enable_auto_commit=False)
    await reader.start()
    logged: dict[int, tuple[dict[bytes, bytes], int]] = {}
    try:
        parts = [TopicPartition(topic, p) for p in range(kafka.kafka_partitions)]
        reader.assign(parts)
        await reader.seek_to_beginning(*parts)
        ends = await reader.end_offsets(parts)
        left = {tp for tp in parts if ends[tp] > 0}
        while left:
            for tp, records in (await reader.getmany(*left, timeout_ms=1000)).items():
                values, _ = logged.get(tp.partition, ({}, -1))
                for record in records:
                    assert record.key is not None and record.value is not None
                    values[record.key] = record.value
                    logged[tp.partition] = (values, record.offset)
                    if record.offset + 1 >= ends[tp]:
                        left.discard(tp)
    finally:
        await reader.stop()
    return local, logged

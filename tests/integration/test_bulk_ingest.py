"""`gapwatch ingest FILE` bulk-loads JSON Lines into the real broker and reports rejects."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from gapwatch.core.examples import EXAMPLES
from gapwatch.core.topics import Stream
from gapwatch.kafka.settings import KafkaSettings
from tests.integration.conftest import TOKEN, IngestProcess, read_topic
from tests.integration.scorer_support import bulk_load

pytestmark = pytest.mark.integration


async def test_bulk_ingest_loads_valid_lines_and_reports_rejects(
    kafka: KafkaSettings, tmp_path: Path
):
    lines = []
    for i in range(500):
        doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.replied.v1"])
        doc["id"] = f"bulk-{i}"
        doc["subject"] = doc["data"]["ticket_id"] = f"T-{i}"
        lines.append(orjson.dumps(doc))
    bad_time = copy.deepcopy(EXAMPLES["gapwatch.job.arrived.v1"])
    bad_time["data"]["arrived_at"] = "2026-03-03 14:35"
    # Times whose UTC conversion overflows (issue 27 #2), and one from the far future
    # (issue 26): each a rejected line with its path; the lines after them still load.
    year_one = copy.deepcopy(EXAMPLES["gapwatch.job.arrived.v1"])
    year_one["data"]["arrived_at"] = "0001-01-01T00:00:00+14:00"
    far = copy.deepcopy(EXAMPLES["gapwatch.job.arrived.v1"])
    far["data"]["arrived_at"] = "3000-01-01T00:00:00Z"
    lines[10:10] = [
        b"{not json",
        b"",
        orjson.dumps(bad_time),
        b'{"type": "gapwatch.job.arrived.v7"}',
        orjson.dumps(year_one),
        orjson.dumps(far),
    ]
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    rejects = tmp_path / "rejects.jsonl"

    env = {
        **os.environ,
        "GAPWATCH_KAFKA_BOOTSTRAP": kafka.kafka_bootstrap,
        "GAPWATCH_TOPIC_PREFIX": kafka.topic_prefix,
        "GAPWATCH_KAFKA_PARTITIONS": str(kafka.kafka_partitions),
    }
    out = subprocess.run(
        [sys.executable, "-m", "gapwatch", "ingest", str(source), "--rejects", str(rejects), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr
    assert "accepted 500 events" in out.stdout
    assert "rejected 5 lines" in out.stdout
    assert "malformed_json: 1" in out.stdout and "unsupported_version: 1" in out.stdout

    records = await read_topic(kafka, Stream.TICKETS, 500)
    assert sorted(orjson.loads(r.value)["id"] for r in records) == sorted(
        f"bulk-{i}" for i in range(500)
    )
    rejected = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejected] == [
        (11, "malformed_json"),
        (13, "schema_invalid"),
        (14, "unsupported_version"),
        (15, "schema_invalid"),
        (16, "from_the_future"),
    ]
    assert rejected[1]["errors"][0]["path"] == "data.arrived_at"
    assert [(e["path"], e["code"]) for e in rejected[3]["errors"]] == [
        ("data.arrived_at", "timestamp_range")
    ]
    assert [(e["path"], e["code"]) for e in rejected[4]["errors"]] == [
        ("data.arrived_at", "from_the_future")
    ]


async def test_api_and_bulk_paths_partition_an_item_alike(
    kafka: KafkaSettings, ingest: IngestProcess, tmp_path: Path
):
    # The API batches per partition with its own murmur2 call; the bulk path uses aiokafka's
    # default partitioner. Feedback loaded in bulk must still meet its ticket's partition.
    items = [f"T-x{i}" for i in range(60)]
    tickets = []
    for i, item in enumerate(items):
        doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
        doc["id"], doc["subject"], doc["data"]["ticket_id"] = f"open-{i}", item, item
        tickets.append(doc)
    response = httpx.post(
        ingest.url + "/v1/events",
        content=orjson.dumps(tickets),
        timeout=30,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status_code == 202
    lines = []
    for i, item in enumerate(items):
        doc = copy.deepcopy(EXAMPLES["gapwatch.feedback.submitted.v1"])
        doc["id"], doc["subject"], doc["data"]["item_id"] = f"fb-{i}", item, item
        lines.append(orjson.dumps(doc))
    source = tmp_path / "feedback.jsonl"
    source.write_bytes(b"\n".join(lines))
    bulk_load(kafka, source)
    ticket_partition = {r.key: r.partition for r in await read_topic(kafka, Stream.TICKETS, 60)}
    feedback = await read_topic(kafka, Stream.FEEDBACK, 60)
    assert len(feedback) == 60 and len(set(ticket_partition.values())) == kafka.kafka_partitions
    assert all(r.partition == ticket_partition[r.key] for r in feedback)

"""`gapwatch import servicenow --to kafka` and `--to http://…` land every mapped event."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from gapwatch.core.topics import INPUT_STREAMS
from gapwatch.importers import ImportOptions, get_source
from gapwatch.importers.pipeline import run_import
from gapwatch.kafka.settings import KafkaSettings
from tests.integration.conftest import REPO, TOKEN, IngestProcess, end_offsets, read_topic
from tests.unit.test_import_servicenow import REAL_ZIP

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not REAL_ZIP.is_file(), reason="the shared ServiceNow log is not here"),
]

INCIDENTS = 60


def expected_ids() -> set[str]:
    from gapwatch.config import load_policies

    policies = load_policies(REPO / "deploy" / "config" / "servicenow-policies.yaml")
    imported = run_import(
        get_source("servicenow"),
        REAL_ZIP,
        ImportOptions(policies=policies, limit=INCIDENTS),
        progress=False,
    )
    return {orjson.loads(line)["id"] for line in imported.events}


def run_cli(kafka: KafkaSettings, *target: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GAPWATCH_KAFKA_BOOTSTRAP": kafka.kafka_bootstrap,
        "GAPWATCH_TOPIC_PREFIX": kafka.topic_prefix,
        "GAPWATCH_INGEST_TOKEN": TOKEN,
    }
    command = [sys.executable, "-m", "gapwatch", "import", "servicenow", str(REAL_ZIP)]
    command += [*target, "--limit", str(INCIDENTS), "-q"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


async def landed_ids(kafka: KafkaSettings) -> list[str]:
    total = await end_offsets(kafka, INPUT_STREAMS)
    records = []
    for stream in INPUT_STREAMS:
        records += await read_topic(kafka, stream, await end_offsets(kafka, (stream,)), timeout=60)
    assert len(records) == total
    return [orjson.loads(r.value)["id"] for r in records]


async def test_import_to_kafka_lands_every_event_once(kafka: KafkaSettings):
    out = run_cli(kafka, "--to", "kafka")
    assert out.returncode == 0, out.stderr
    want = expected_ids()
    assert f"produced {len(want)} events to Kafka" in out.stderr
    ids = await landed_ids(kafka)
    assert sorted(ids) == sorted(want)


async def test_import_to_the_ingest_api_lands_every_event(
    ingest: IngestProcess, kafka: KafkaSettings
):
    out = run_cli(kafka, "--to", ingest.url, "--batch", "50")
    assert out.returncode == 0, out.stderr
    want = expected_ids()
    assert f"sent {len(want)} events" in out.stderr
    assert set(await landed_ids(kafka)) == want


def test_import_to_an_unreachable_api_says_so(kafka: KafkaSettings):
    out = run_cli(kafka, "--to", "http://127.0.0.1:9")
    assert out.returncode == 1
    assert "cannot reach http://127.0.0.1:9 after 0 events" in out.stderr

"""Bad records written straight to Kafka end in the dead-letter topic; the scorer goes on."""

from __future__ import annotations

import asyncio
import base64
import copy
import time
from pathlib import Path

import orjson
import pytest

from gapwatch.core.examples import EXAMPLES
from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.clients import reliable_producer
from gapwatch.kafka.settings import KafkaSettings
from gapwatch_scorer.app import segment_topic_name
from tests.integration.conftest import read_topic, stop_process
from tests.integration.scorer_support import start_scorer

pytestmark = pytest.mark.integration


async def test_bad_records_are_dead_lettered_with_reason_and_bytes(
    kafka: KafkaSettings, tmp_path: Path
):
    good = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    good["data"]["priority"] = "P1"
    wrong_type = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    wrong_type["data"]["opened_at"] = 1_772_000_000
    huge = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    huge["data"]["team"] = "x" * 500_000
    future_version = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    future_version["type"] = "gapwatch.ticket.opened.v2"
    wrong_key = copy.deepcopy(EXAMPLES["gapwatch.ticket.closed.v1"])
    bad = [
        (b"\x00\xff garbage", b"T-1001", "malformed_json"),
        (orjson.dumps(wrong_type), b"T-1001", "schema_invalid"),
        (orjson.dumps(huge), b"T-1001", "schema_invalid"),
        (orjson.dumps(future_version), b"T-1001", "unsupported_version"),
        (orjson.dumps({"type": "com.example.nope"}), b"T-1001", "unknown_type"),
        (orjson.dumps(wrong_key), b"T-other", "key_mismatch"),
    ]
    scorer = start_scorer(kafka, tmp_path, "dl", GAPWATCH_SCORER_WALL_CLOCK="false")
    try:
        producer = reliable_producer(kafka, max_request_size=4 * 1024 * 1024)
        await producer.start()
        tickets = topic_name(Stream.TICKETS, kafka.topic_prefix)
        try:
            for value, key, _ in bad:
                await producer.send_and_wait(tickets, value, key=key)
            await producer.send_and_wait(tickets, orjson.dumps(good), key=b"T-1001")
        finally:
            await producer.stop()
        letters = await read_topic(kafka, Stream.DEADLETTER, len(bad), timeout=120)
        got = [orjson.loads(r.value) for r in letters]
        assert [g["reason"] for g in got] == [reason for _, _, reason in bad]
        assert [base64.b64decode(g["value_b64"]) for g in got] == [v for v, _, _ in bad]
        assert all(g["topic"] == tickets and g["detail"] for g in got)
        # The scorer went on: the good ticket after the bad records was scored.
        deadline = time.monotonic() + 30
        while 'events_total{stream="tickets"} 1.0' not in (metrics := scorer.metrics()):
            assert time.monotonic() < deadline, metrics
            await asyncio.sleep(0.5)
        assert 'gapwatch_scorer_dead_letters_total{reason="malformed_json"} 1.0' in metrics
        assert scorer.process.poll() is None
    finally:
        stop_process(scorer.process)


async def test_bad_gap_records_are_dead_lettered_and_the_windows_go_on(
    kafka: KafkaSettings, tmp_path: Path
):
    """The windows stage's input (the segment topic the clocks stage writes) is a Kafka topic
    like any other: a record another producer wrote there that is not a gap event is kept as a
    dead letter and must not stop the windows stage."""
    undecodable = b"\x00\xff not json"
    not_a_gap = orjson.dumps({"data": {"segment": {"team": "t1"}}, "id": "x"})
    wrong_segment = orjson.dumps({"data": {"segment": ["not", "a", "map"]}})
    bad = [undecodable, not_a_gap, wrong_segment]
    opened = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    replied = copy.deepcopy(EXAMPLES["gapwatch.ticket.replied.v1"])
    scorer = start_scorer(kafka, tmp_path, "dlw", GAPWATCH_SCORER_WALL_CLOCK="false")
    try:
        producer = reliable_producer(kafka)
        await producer.start()
        try:
            for value in bad:
                await producer.send_and_wait(
                    segment_topic_name(kafka.topic_prefix), value, key=b"team=t1"
                )
            tickets = topic_name(Stream.TICKETS, kafka.topic_prefix)
            key = opened["subject"].encode()
            await producer.send_and_wait(tickets, orjson.dumps(opened), key=key)
            await producer.send_and_wait(tickets, orjson.dumps(replied), key=key)
        finally:
            await producer.stop()
        letters = await read_topic(kafka, Stream.DEADLETTER, len(bad), timeout=120)
        got = [orjson.loads(r.value) for r in letters]
        assert sorted(base64.b64decode(g["value_b64"]) for g in got) == sorted(bad)
        assert {g["reason"] for g in got} <= {"malformed_json", "schema_invalid"}, got
        assert all(g["service"] == "scorer-windows" and g["detail"] for g in got), got
        # The windows stage went on: the reply's first-response outcome was counted.
        deadline = time.monotonic() + 60
        while "gapwatch_promise_outcomes_total{" not in scorer.metrics():
            assert time.monotonic() < deadline, scorer.log()[-3000:]
            await asyncio.sleep(0.5)
        assert scorer.process.poll() is None
    finally:
        stop_process(scorer.process)

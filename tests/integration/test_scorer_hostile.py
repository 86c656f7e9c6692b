"""Hostile records written straight to Kafka (or posted to ingest) against a live scorer: each is
refused with its own reason, none stops or freezes a partition, none is an `internal_error`."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.partitioner import murmur2

from gapwatch.core.examples import EXAMPLES
from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.clients import reliable_producer
from gapwatch.kafka.settings import KafkaSettings
from tests.integration.conftest import read_topic, stop_process
from tests.integration.scorer_support import ScorerProcess, start_scorer

pytestmark = pytest.mark.integration

FAR_FUTURE = "3000-01-01T00:00:00Z"


def partition_of(item: str, partitions: int) -> int:
    return (murmur2(item.encode()) & 0x7FFFFFFF) % partitions


def ticket(item: str, opened: datetime, due: datetime, tag: str) -> dict[str, Any]:
    """A ticket opened at `opened` with one explicit first-response promise due at `due`."""
    doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    doc.update(id=f"{tag}-{item}", subject=item, time=opened.isoformat())
    doc["data"].update(
        ticket_id=item,
        opened_at=opened.isoformat(),
        promises=[{"kind": "first_response", "due_at": due.isoformat()}],
    )
    del doc["data"]["sla_policy"]
    return doc


def items_on(partition: int, partitions: int, count: int, tag: str, *, on: bool) -> list[str]:
    """`count` item ids keyed to `partition` (on) or to any other partition (not on)."""
    out: list[str] = []
    n = 0
    while len(out) < count:
        item = f"HOSTILE-{tag}-{n}"
        n += 1
        if (partition_of(item, partitions) == partition) == on:
            out.append(item)
    return out


async def wait_for_metric(scorer: ScorerProcess, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while text not in (metrics := scorer.metrics()):
        assert time.monotonic() < deadline, f"{text!r} not in:\n{metrics[-3000:]}"
        await asyncio.sleep(0.5)
    return metrics


async def test_a_far_future_event_freezes_no_partition(
    kafka: KafkaSettings, client: httpx.AsyncClient, tmp_path: Path
):
    """Issue 26's probe: one ticket from the year 3000, then ordinary tickets due in seconds on
    its partition and on others. It is refused at ingest and dead-lettered from Kafka; every
    ordinary ticket breaches at its due time."""
    partitions = kafka.kafka_partitions
    poisoned_item = "HOSTILE-3000"
    poisoned = partition_of(poisoned_item, partitions)
    far = ticket(
        poisoned_item, datetime(3000, 1, 1, tzinfo=UTC), datetime(3000, 1, 2, tzinfo=UTC), "far"
    )
    scorer = start_scorer(kafka, tmp_path, "future")
    try:
        # Through ingest: a 422 naming both of its own times and the limit.
        answer = await client.post("/v1/events", content=orjson.dumps(far))
        assert answer.status_code == 422, answer.text
        problem = answer.json()
        paths = {e["path"]: e for e in problem["errors"]}
        assert set(paths) == {"time", "data.opened_at"}
        assert {e["code"] for e in problem["errors"]} == {"from_the_future"}
        assert "GAPWATCH_MAX_FUTURE_SKEW_SECONDS" in paths["data.opened_at"]["reason"]

        # Straight to Kafka, on its item's partition: a dead letter with its own reason.
        producer = reliable_producer(kafka)
        await producer.start()
        try:
            tickets = topic_name(Stream.TICKETS, kafka.topic_prefix)
            await producer.send_and_wait(tickets, orjson.dumps(far), key=poisoned_item.encode())
        finally:
            await producer.stop()
        letters = await read_topic(kafka, Stream.DEADLETTER, 1, timeout=60)
        letter = orjson.loads(letters[0].value)
        assert letter["reason"] == "from_the_future", letter
        assert letter["partition"] == poisoned

        # Then ordinary tickets opened now and due in 5 s: five on the poisoned partition,
        # five on others, through ingest.
        now = datetime.now(UTC).replace(microsecond=0)
        due = now + timedelta(seconds=5)
        same = items_on(poisoned, partitions, 5, "same", on=True)
        other = items_on(poisoned, partitions, 5, "other", on=False)
        batch = [ticket(item, now, due, "now") for item in same + other]
        answer = await client.post("/v1/events", content=orjson.dumps(batch))
        assert answer.status_code == 202, answer.text

        breached: dict[str, Any] = {}
        deadline = time.monotonic() + 90
        while len(breached) < len(batch):
            assert time.monotonic() < deadline, f"breached only {sorted(breached)}"
            # Everything on the topic so far (it never holds that many).
            records = await read_topic(kafka, Stream.GAPS, 100_000, timeout=3)
            for record in records:
                gap = orjson.loads(record.value)["data"]
                if gap["outcome"] == "breached" and gap["promise_kind"] == "first_response":
                    breached[gap["item_id"]] = gap
        assert set(breached) == set(same + other)
        for gap in breached.values():  # at their due time, not at some later tick's
            assert datetime.fromisoformat(gap["outcome_at"]) == due
        metrics = scorer.metrics()
        assert 'dead_letters_total{reason="too_late"}' not in metrics
        assert 'dead_letters_total{reason="from_the_future"} 1.0' in metrics
    finally:
        stop_process(scorer.process)


def hostile_records(broker_limit: int) -> list[tuple[bytes, bytes | None, str]]:
    """(value, key, the reason its dead letter must give), each outside the repo's older
    garbage tests: issue 26's far future, issue 27's overflowing times, null key, conflicting
    duplicate, and a value and a key just under the broker's record limit."""
    opened = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    far = copy.deepcopy(opened)
    far["time"] = far["data"]["opened_at"] = FAR_FUTURE
    year_one = copy.deepcopy(opened)
    year_one["data"]["opened_at"] = "0001-01-01T00:00:00+14:00"
    year_9999 = copy.deepcopy(opened)
    year_9999["time"] = "9999-12-31T23:59:59-12:00"
    beyond_horizon = copy.deepcopy(opened)
    beyond_horizon["data"]["promises"] = [{"kind": "resolution", "due_at": "8999-12-30T00:00:00Z"}]
    conflicting = copy.deepcopy(opened)  # same id as `opened`, another team
    conflicting["data"]["team"] = "someone-else"
    room = broker_limit - 2048  # the record's own framing
    random_value = os.urandom(room)
    long_key = b"K" * room
    key = b"T-1001"
    return [
        (orjson.dumps(opened), key, ""),  # the first of its id: scored
        (orjson.dumps(far), key, "from_the_future"),
        (orjson.dumps(year_one), key, "schema_invalid"),
        (orjson.dumps(year_9999), key, "schema_invalid"),
        (orjson.dumps(beyond_horizon), key, "schema_invalid"),
        (orjson.dumps(opened), None, "key_mismatch"),
        (orjson.dumps(conflicting), key, "conflicting_duplicate"),
        (random_value, key, "malformed_json"),
        (orjson.dumps(opened), long_key, "key_mismatch"),
    ]


async def test_hostile_records_get_their_own_reasons_and_fitting_dead_letters(
    kafka: KafkaSettings, tmp_path: Path
):
    """Issue 27 #1, #2, #4, #7 and issue 26 straight to Kafka: a dead letter each with its
    own reason, all sent (the ones whose original is too big keep its digest instead), no
    restart, healthy, and no `internal_error`."""
    broker_limit = 1_048_588  # Kafka's default message.max.bytes, which deploy/local keeps
    records = hostile_records(broker_limit)
    scorer = start_scorer(kafka, tmp_path, "hostile", GAPWATCH_SCORER_WALL_CLOCK="false")
    try:
        producer = reliable_producer(kafka, max_request_size=2 * broker_limit)
        await producer.start()
        tickets = topic_name(Stream.TICKETS, kafka.topic_prefix)
        try:
            for value, key, _ in records:
                await producer.send_and_wait(tickets, value, key=key)
            closed = copy.deepcopy(EXAMPLES["gapwatch.ticket.closed.v1"])
            await producer.send_and_wait(tickets, orjson.dumps(closed), key=b"T-1001")
        finally:
            await producer.stop()
        wanted = [(v, k, reason) for v, k, reason in records if reason]
        letters = await read_topic(kafka, Stream.DEADLETTER, len(wanted), timeout=120)

        # Dead letters are keyed like their records, so they spread over partitions and come
        # back in no fixed order: pair each with its record by reason and sizes.
        def identity(reason: str, value_size: int, key_size: int) -> tuple[str, int, int]:
            return reason, value_size, key_size

        wanted.sort(key=lambda r: identity(r[2], len(r[0]), len(r[1] or b"")))
        pairs = sorted(
            ((orjson.loads(r.value), r) for r in letters),
            key=lambda p: identity(p[0]["reason"], p[0]["value_size"], p[0]["key_size"]),
        )
        got = [letter for letter, _ in pairs]
        letters = [record for _, record in pairs]
        assert [g["reason"] for g in got] == [reason for _, _, reason in wanted]
        for (value, key, _), letter, record in zip(wanted, got, letters, strict=True):
            assert len(record.value) + len(record.key or b"") < broker_limit
            # Where it came from and why, as Kafka Connect names its dead-letter context.
            context = dict(record.headers)
            assert context["__connect.errors.topic"] == tickets.encode()
            assert context["__connect.errors.offset"] == str(letter["offset"]).encode()
            assert context["__connect.errors.partition"] == str(letter["partition"]).encode()
            assert context["__connect.errors.exception.class.name"] == letter["reason"].encode()
            assert letter["value_size"] == len(value)
            if letter["copied"]:
                assert orjson.loads(orjson.dumps(letter))["value_b64"]
            else:  # too big to copy: named by digest, and said so
                assert letter["value_sha256"] == hashlib.sha256(value).hexdigest()
                assert letter["key_sha256"] == hashlib.sha256(key or b"").hexdigest()
                assert len(record.key) <= 256
        assert sum(not g["copied"] for g in got) == 2  # the huge value, the huge key
        duplicate = next(g for g in got if g["reason"] == "conflicting_duplicate")
        assert duplicate["detail"].count("sha256") == 2

        # The scorer went on: both good events (the opened ticket, then its closing) scored,
        # with no restart, healthy, and nothing blamed on a bug.
        metrics = await wait_for_metric(scorer, 'events_total{stream="tickets"} 2.0')
        assert "internal_error" not in metrics
        assert "gapwatch_scorer_stage_restarts_total{" not in metrics
        health = httpx.get(scorer.url + "/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        log = scorer.log()
        assert "K" * 1000 not in log, "a huge key was logged whole"
        assert scorer.process.poll() is None
    finally:
        stop_process(scorer.process)

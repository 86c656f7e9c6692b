"""The scorer on the real broker: live output equals replay, breaches on time, workers, crashes."""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gapwatch.config import load_policies
from gapwatch.core.clock import ClockConfig
from gapwatch.core.examples import EXAMPLES
from gapwatch.core.gaps import Outcome
from gapwatch.core.scoring import ReplayResult, ScoringConfig, replay
from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.clients import reliable_producer
from gapwatch.kafka.settings import KafkaSettings
from gapwatch.simulation import Scenario, Simulator
from tests.integration.conftest import REPO, end_offsets, read_topic, stop_process
from tests.integration.scorer_support import (
    bulk_load,
    flush_events,
    saved_items_and_changelog,
    start_scorer,
)

pytestmark = pytest.mark.integration

COUNTED = ("met", "breached", "delivered_late", "at_risk", "cancelled")


def stream_file(kafka: KafkaSettings, tmp_path: Path, seed: int) -> tuple[Path, list[bytes]]:
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    end = start + timedelta(hours=2)
    scenario = Scenario.named("team-slip", slip_start_minutes=30, slip_end_minutes=80)
    sim = Simulator(start=start, items_per_second=0.25, scenario=scenario, seed=seed)
    lines = [orjson.dumps(e) for e in sim.events_until(end)]
    lines += flush_events(end, kafka.kafka_partitions, kafka.topic_prefix)
    path = tmp_path / "stream.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, lines


def expected(lines: list[bytes]) -> ReplayResult:
    policies = load_policies(REPO / "deploy" / "config" / "policies.yaml")
    return replay(lines, ScoringConfig(ClockConfig.from_policies(policies)))


async def gap_events(kafka: KafkaSettings, count: int, timeout: float = 240) -> dict[str, Any]:
    records = await read_topic(kafka, Stream.GAPS, count, timeout=timeout)
    events: dict[str, Any] = {}
    for record in records:
        doc = orjson.loads(record.value)
        if doc["id"] in events:
            assert events[doc["id"]] == doc, "same id, different content"
        events[doc["id"]] = doc
    return events


async def latest_windows(kafka: KafkaSettings) -> dict[tuple[Any, ...], dict[str, Any]]:
    total = await end_offsets(kafka, (Stream.SCORES,))
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for record in await read_topic(kafka, Stream.SCORES, total, timeout=60):
        doc = orjson.loads(record.value)
        if doc.get("kind") == "window":
            key = (tuple(sorted(doc["segment"].items())), doc["promise_kind"], doc["window"])
            latest[key] = doc
    return latest


def differences(live: dict[str, Any], want: ReplayResult) -> str:
    """What differs between live and replayed gap events, item by item, for a failure message."""
    replayed = {e.id: e.model_dump(mode="json", exclude_none=True) for e in want.gap_events}
    odd = set(live) ^ set(replayed)
    items = {(live.get(i) or replayed[i])["data"]["item_id"] for i in odd}

    def brief(doc: dict[str, Any]) -> str:
        d = doc["data"]
        return (
            f"{doc['id'][:8]} {d['outcome']} {d['promise_kind']} at {d['outcome_at']}"
            f" cause={d.get('caused_by')} corrects={d.get('corrects')}"
        )

    out = [f"{len(set(replayed) - set(live))} missing, {len(set(live) - set(replayed))} extra"]
    for item in sorted(items):
        out.append(f"item {item}:")
        out += ["  replay " + brief(d) for d in replayed.values() if d["data"]["item_id"] == item]
        out += ["  live   " + brief(d) for d in live.values() if d["data"]["item_id"] == item]
    return "\n".join(out)


def replay_windows(result: ReplayResult) -> dict[tuple[Any, ...], dict[str, Any]]:
    assert result.scoring.watermark is not None
    snapshot = result.scoring.snapshot(result.scoring.watermark)
    return {
        (tuple(sorted(w.segment.items())), w.promise_kind.value, w.window): w.as_dict()
        for w in snapshot.windows
        if w.promise_kind is not None
    }


async def wait_for_windows(
    kafka: KafkaSettings, want: dict[tuple[Any, ...], dict[str, Any]], timeout: float = 60
) -> dict[tuple[Any, ...], dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        live = await latest_windows(kafka)
        if all(key in live and _counts(live[key]) == _counts(doc) for key, doc in want.items()):
            return live
        if time.monotonic() > deadline:
            return live
        await asyncio.sleep(2)


def _counts(doc: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(doc[name] for name in COUNTED)


def seven_day(windows: dict[tuple[Any, ...], dict[str, Any]]) -> dict[tuple[Any, ...], Any]:
    return {k: _counts(v) for k, v in windows.items() if k[2] == "7d"}


async def test_live_gap_events_and_windows_equal_replay(kafka: KafkaSettings, tmp_path: Path):
    path, lines = stream_file(kafka, tmp_path, seed=11)
    want = expected(lines)
    assert want.rejected == [] and len(want.gap_events) > 500
    scorer = start_scorer(kafka, tmp_path, "a", GAPWATCH_SCORER_WALL_CLOCK="false")
    try:
        bulk_load(kafka, path)
        live = await gap_events(kafka, len(want.gap_events))
        replayed = {e.id: e.model_dump(mode="json", exclude_none=True) for e in want.gap_events}
        missing = set(replayed) - set(live)
        extra = set(live) - set(replayed)
        assert not missing and not extra, (len(missing), len(extra))
        assert all(live[i] == replayed[i] for i in replayed)
        breached = Counter(
            e.data.segment["team"]
            for e in want.gap_events
            if e.data.outcome is Outcome.BREACHED and e.data.promise_kind.value == "first_response"
        )
        assert breached["billing"] > breached["network"]
        want_windows = seven_day(replay_windows(want))
        live_windows = seven_day(
            await wait_for_windows(
                kafka, {k: v for k, v in replay_windows(want).items() if k[2] == "7d"}
            )
        )
        assert live_windows == want_windows
        metrics = scorer.metrics()
        assert "gapwatch_scorer_events_total" in metrics
        assert "gapwatch_promise_outcomes_total{" in metrics
    finally:
        stop_process(scorer.process)


async def test_breach_fires_within_two_seconds_of_its_due_time(
    kafka: KafkaSettings, tmp_path: Path
):
    scorer = start_scorer(kafka, tmp_path, "b", GAPWATCH_SCORER_TICK_SECONDS="0.2")
    try:
        due = datetime.now(UTC) + timedelta(seconds=6)
        opened_at = due - timedelta(minutes=15)  # P1: first response within 15 minutes
        doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
        doc.update(id="on-time-1", subject="T-ON-TIME", time=opened_at.isoformat())
        doc["data"].update(
            ticket_id="T-ON-TIME",
            opened_at=opened_at.isoformat(),
            priority="P1",
            promises=[],
            customer_tier="standard",
        )
        doc["data"].pop("sla_policy")
        producer = reliable_producer(kafka)
        await producer.start()
        try:
            await producer.send_and_wait(
                topic_name(Stream.TICKETS, kafka.topic_prefix), orjson.dumps(doc), key=b"T-ON-TIME"
            )
        finally:
            await producer.stop()
        breach = None
        deadline = time.monotonic() + 60
        while breach is None and time.monotonic() < deadline:
            total = await end_offsets(kafka, (Stream.GAPS,))
            for record in await read_topic(kafka, Stream.GAPS, total, timeout=10):
                event = orjson.loads(record.value)
                if event["type"] == "gapwatch.gap.breached.v1":
                    breach = (event, record.timestamp)
            await asyncio.sleep(0.5)
        assert breach is not None, scorer.log()[-3000:]
        event, appended_ms = breach
        assert event["data"]["outcome_at"] == due.isoformat().replace("+00:00", "Z")
        late_ms = appended_ms - due.timestamp() * 1000
        assert 0 <= late_ms <= 2000, late_ms
    finally:
        stop_process(scorer.process)


async def test_two_workers_give_the_same_figures_as_replay(kafka: KafkaSettings, tmp_path: Path):
    path, lines = stream_file(kafka, tmp_path, seed=12)
    want = expected(lines)
    first = start_scorer(kafka, tmp_path, "w1", GAPWATCH_SCORER_WALL_CLOCK="false")
    second = start_scorer(kafka, tmp_path, "w2", GAPWATCH_SCORER_WALL_CLOCK="false")
    try:
        bulk_load(kafka, path)
        live = await gap_events(kafka, len(want.gap_events))
        assert set(live) == {e.id for e in want.gap_events}, differences(live, want)
        want_windows = {k: v for k, v in replay_windows(want).items() if k[2] == "7d"}
        assert seven_day(await wait_for_windows(kafka, want_windows)) == seven_day(want_windows)
        both = first.metrics() + second.metrics()
        assert both.count("gapwatch_scorer_events_total{") >= 2
    finally:
        stop_process(first.process)
        stop_process(second.process)


async def test_kill_9_mid_stream_loses_nothing(kafka: KafkaSettings, tmp_path: Path):
    _, lines = stream_file(kafka, tmp_path, seed=13)
    want = expected(lines)
    half = len(lines) // 2
    first_half, second_half = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first_half.write_bytes(b"\n".join(lines[:half]) + b"\n")
    second_half.write_bytes(b"\n".join(lines[half:]) + b"\n")
    env = {"GAPWATCH_SCORER_WALL_CLOCK": "false"}
    scorer = start_scorer(kafka, tmp_path, "k", **env)
    try:
        bulk_load(kafka, first_half)
        await read_topic(kafka, Stream.GAPS, 1, timeout=120)
        bulk_load(kafka, second_half)
        await asyncio.sleep(0.5)
        os.kill(scorer.process.pid, signal.SIGKILL)
        scorer.process.wait(10)
        scorer = start_scorer(kafka, tmp_path, "k", **env)
        # Ready (the k8s readiness probe) only once every assigned partition is restored.
        readiness: dict[str, Any] = {}
        for _ in range(240):
            try:
                answer = httpx.get(scorer.url + "/readyz", timeout=5)
            except httpx.TransportError:  # its web server not listening yet: not ready either
                await asyncio.sleep(0.5)
                continue
            readiness = answer.json()
            if answer.status_code == 200:
                break
            assert readiness["status"] == "not ready", readiness
            await asyncio.sleep(0.5)
        assert readiness["status"] == "ready", readiness
        assert readiness["assigned"] == list(range(kafka.kafka_partitions))
        assert readiness["restoring"] == []
        total_expected = len(want.gap_events)
        deadline = time.monotonic() + 240
        live: dict[str, Any] = {}
        while time.monotonic() < deadline:
            total = await end_offsets(kafka, (Stream.GAPS,))
            live = await gap_events(kafka, total, timeout=60)
            if len(live) >= total_expected:
                break
            await asyncio.sleep(2)
        replayed = {e.id: e.model_dump(mode="json", exclude_none=True) for e in want.gap_events}
        assert set(live) == set(replayed), (
            len(set(replayed) - set(live)),
            Counter(
                (
                    live[i]["data"]["outcome"],
                    live[i]["data"]["promise_kind"],
                    "corrects" in live[i]["data"],
                    live[i]["data"]["item_id"][:6],
                )
                for i in set(live) - set(replayed)
            ),
        )
        assert all(live[i] == replayed[i] for i in replayed)
        # The restarted worker rebuilt its windows from the gap history: no loss, no double
        # count of the gap events it re-emitted under the same ids.
        want_windows = {k: v for k, v in replay_windows(want).items() if k[2] == "7d"}
        assert seven_day(await wait_for_windows(kafka, want_windows)) == seven_day(want_windows)
        assert "rebuilt windows of segment partition" in scorer.log()
        # The saved clocks: the killed worker's acknowledged saves were recovered from the
        # changelog, and each partition's store holds the newest value of every key on it,
        # with the changelog's newest offset as its persisted offset (a restart reads nothing).
        stop_process(scorer.process)
        local, logged = await saved_items_and_changelog(kafka, tmp_path, "k")
        assert len(logged) == kafka.kafka_partitions
        for number, (values, newest) in logged.items():
            assert local[number] == (values, newest), number
    finally:
        stop_process(scorer.process)


def ticket_event(kind: str, item: str, at: datetime, **data: Any) -> bytes:
    doc = copy.deepcopy(EXAMPLES[f"gapwatch.ticket.{kind}.v1"])
    doc.update(id=f"{item}-{kind}", subject=item, time=at.isoformat())
    doc["data"].update(ticket_id=item, **data)
    doc["data"].pop("sla_policy", None)
    return orjson.dumps(doc)


async def breaches(kafka: KafkaSettings, item: str) -> list[dict[str, Any]]:
    total = await end_offsets(kafka, (Stream.GAPS,))
    found = []
    for record in await read_topic(kafka, Stream.GAPS, total, timeout=10):
        event = orjson.loads(record.value)
        if event["subject"] == item and event["type"] == "gapwatch.gap.breached.v1":
            found.append(event)
    return found


async def test_a_policy_change_breaches_open_promises_its_new_target_has_passed(
    kafka: KafkaSettings, tmp_path: Path
):
    """A P1 ticket opened 10 minutes ago, still unanswered (a status change 2 minutes ago):
    on time under the 15-minute first-response target it was saved under. The worker restarts
    with a 5-minute target: the promise is overdue since 5 minutes ago, and its breach is
    published by the restore (the re-fold alone would move the promise past its due time
    without a word)."""
    now = datetime.now(UTC).replace(microsecond=0)
    opened_at, changed_at = now - timedelta(minutes=10), now - timedelta(minutes=2)
    item = "T-POLICY"
    policies = (REPO / "deploy" / "config" / "policies.yaml").read_text()
    assert policies.count("first_response: {within: 15m}") == 1
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(
        policies.replace("first_response: {within: 15m}", "first_response: {within: 5m}")
    )
    env = {"GAPWATCH_SCORER_TICK_SECONDS": "0.2"}
    scorer = start_scorer(kafka, tmp_path, "policy", **env)
    try:
        producer = reliable_producer(kafka)
        await producer.start()
        try:
            topic = topic_name(Stream.TICKETS, kafka.topic_prefix)
            opened = ticket_event(
                "opened",
                item,
                opened_at,
                opened_at=opened_at.isoformat(),
                priority="P1",
                promises=[],
                customer_tier="standard",
            )
            changed = ticket_event(
                "status_changed",
                item,
                changed_at,
                changed_at=changed_at.isoformat(),
                status="in_progress",
            )
            for value in (opened, changed):
                await producer.send_and_wait(topic, value, key=item.encode())
        finally:
            await producer.stop()
        deadline = time.monotonic() + 60
        while (
            "gapwatch_scorer_events_total" not in scorer.metrics()
            or sum(
                float(line.split()[-1])
                for line in scorer.metrics().splitlines()
                if line.startswith("gapwatch_scorer_events_total{")
            )
            < 2
        ):
            assert time.monotonic() < deadline, scorer.log()[-3000:]
            await asyncio.sleep(0.2)
    finally:
        stop_process(scorer.process)
    assert await breaches(kafka, item) == []  # 15 minutes: due in 5 minutes still
    scorer = start_scorer(
        kafka, tmp_path, "policy", GAPWATCH_SCORER_POLICIES_FILE=str(stricter), **env
    )
    try:
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while not found and time.monotonic() < deadline:
            found = await breaches(kafka, item)
            await asyncio.sleep(0.5)
        assert [e["data"]["promise_kind"] for e in found] == ["first_response"], scorer.log()[
            -3000:
        ]
        due = opened_at + timedelta(minutes=5)
        assert found[0]["data"]["outcome_at"] == due.isoformat().replace("+00:00", "Z")
        assert "gap events that changed policies imply" in scorer.log()
    finally:
        stop_process(scorer.process)

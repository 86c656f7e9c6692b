"""Scorer benchmark on the real broker, beside a raw aiokafka consume loop in the same run.

Prints:
  1. raw: an aiokafka consumer (getmany + json.loads + a dict update) over the input topics;
  2. scorer: sustained events/s through one scorer worker over the same events (its own count);
  3. latency from input append to gap-event append at about half the scorer's rate (p50/p99);
  4. memory per open promise, in-process, with --items open tickets (two promises each);
  5. restart time of a worker holding --restart-items items in its table.

    .venv/bin/python -m bench.scorer [--events 60000] [--items 1000000] [--restart-items 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from bench.common import REPO, kafka_bootstrap
from gapwatch.config import load_policies
from gapwatch.core.clock import ClockConfig
from gapwatch.core.examples import EXAMPLES
from gapwatch.core.scoring import Scoring, ScoringConfig
from gapwatch.core.topics import INPUT_STREAMS, Stream, topic_name
from gapwatch.core.validation import validate_event
from gapwatch.kafka.clients import consumer, reliable_producer
from gapwatch.kafka.settings import KafkaSettings
from gapwatch.kafka.topics import ensure_topics
from gapwatch.simulation import Scenario, Simulator


def fresh_settings(partitions: int) -> KafkaSettings:
    return KafkaSettings(
        kafka_bootstrap=kafka_bootstrap(),
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        kafka_partitions=partitions,
    )


def simulated(events: int, start: datetime, seed: int = 5) -> list[dict[str, object]]:
    sim = Simulator(start=start, items_per_second=2.0, scenario=Scenario.named("steady"), seed=seed)
    out: list[dict[str, object]] = []
    t = start
    while len(out) < events:
        t += timedelta(minutes=10)
        out.extend(sim.events_until(t))
    return out[:events]


async def produce(settings: KafkaSettings, docs: list[dict[str, object]]) -> None:
    producer = reliable_producer(settings)
    await producer.start()
    try:
        for offset in range(0, len(docs), 5000):
            acks = []
            for doc in docs[offset : offset + 5000]:
                event = validate_event(doc)
                acks.append(
                    await producer.send(
                        topic_name(event.stream, settings.topic_prefix),
                        orjson.dumps(doc),
                        key=event.key,
                    )
                )
            await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def raw_consume_rate(settings: KafkaSettings, expected: int) -> float:
    topics = [topic_name(s, settings.topic_prefix) for s in INPUT_STREAMS]
    reader = consumer(
        settings,
        *topics,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        max_partition_fetch_bytes=4 << 20,
    )
    await reader.start()
    state: dict[bytes, int] = {}
    seen = 0
    try:
        started = None
        while seen < expected:
            batch = await reader.getmany(timeout_ms=1000, max_records=10000)
            if started is None and batch:
                started = time.perf_counter()
            for records in batch.values():
                for record in records:
                    doc = orjson.loads(record.value)
                    state[record.key] = state.get(record.key, 0) + len(doc)
                    seen += 1
        assert started is not None
        return seen / (time.perf_counter() - started)
    finally:
        await reader.stop()


def start_scorer(
    settings: KafkaSettings, work: Path, name: str, port: int, wall_clock: bool
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GAPWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "GAPWATCH_TOPIC_PREFIX": settings.topic_prefix,
        "GAPWATCH_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "GAPWATCH_SCORER_PORT": str(port),
        "GAPWATCH_SCORER_DATA_DIR": str(work / f"state-{name}"),
        "GAPWATCH_SCORER_WALL_CLOCK": "true" if wall_clock else "false",
        "GAPWATCH_SCORER_SNAPSHOT_SECONDS": "5",
    }
    log = (work / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "gapwatch_scorer"], env=env, stdout=log, stderr=log, cwd=REPO
    )


def scorer_events(port: int) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return -1.0
    return sum(
        float(m) for m in re.findall(r"^gapwatch_scorer_events_total\{[^}]*\} (\S+)", text, re.M)
    )


def wait_ready(log: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> float:
    started = time.perf_counter()
    while "Worker ready" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.perf_counter() - started > timeout:
            raise SystemExit(f"scorer failed to start; see {log}")
        time.sleep(0.1)
    return time.perf_counter() - started


def scorer_rate(settings: KafkaSettings, work: Path, expected: int) -> float:
    port = 18950
    proc = start_scorer(settings, work, "rate", port, wall_clock=False)
    try:
        wait_ready(work / "rate.log", proc)
        first = None
        while True:
            seen = scorer_events(port)
            now = time.perf_counter()
            if first is None and seen > 0:
                first = (now, seen)
            if seen >= expected:
                break
            time.sleep(0.2)
        assert first is not None
        return (seen - first[1]) / max(now - first[0], 1e-9)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


async def latency(settings: KafkaSettings, work: Path, rate: float, seconds: float) -> list[float]:
    """Produce live ticket events at `rate`/s (opened + replied pairs); for each reply's gap
    event, gap append - input append (ms)."""
    port = 18951
    proc = start_scorer(settings, work, "latency", port, wall_clock=True)
    wait_ready(work / "latency.log", proc)
    producer = reliable_producer(settings)
    await producer.start()
    appended: dict[str, float] = {}
    tickets = topic_name(Stream.TICKETS, settings.topic_prefix)
    try:
        n = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            tick = time.perf_counter()
            acks = []
            for _ in range(max(1, int(rate / 20))):  # two events (opened, replied) each
                n += 1
                now = datetime.now(UTC)
                for kind, body in (
                    ("opened", {"opened_at": now.isoformat(), "priority": "P1", "promises": []}),
                    ("replied", {"replied_at": now.isoformat()}),
                ):
                    doc = orjson.loads(orjson.dumps(EXAMPLES[f"gapwatch.ticket.{kind}.v1"]))
                    item = f"L-{n}"
                    doc.update(id=f"lat-{kind}-{n}", subject=item, time=now.isoformat())
                    doc["data"].update(ticket_id=item, **body)
                    doc["data"].pop("sla_policy", None)
                    acks.append(
                        (
                            doc["id"],
                            await producer.send(tickets, orjson.dumps(doc), key=item.encode()),
                        )
                    )
            for event_id, ack in acks:
                meta = await ack
                appended[event_id] = meta.timestamp / 1000
            await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - tick)))
        await asyncio.sleep(5)
    finally:
        await producer.stop()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    reader = consumer(
        settings,
        topic_name(Stream.GAPS, settings.topic_prefix),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()
    delays = []
    try:
        while True:
            batch = await reader.getmany(timeout_ms=3000)
            if not batch:
                break
            for records in batch.values():
                for record in records:
                    cause = orjson.loads(record.value)["data"]["caused_by"]
                    if cause in appended and cause.startswith("lat-replied"):
                        delays.append((record.timestamp / 1000 - appended[cause]) * 1000)
    finally:
        await reader.stop()
    return delays


def memory_per_open_promise(items: int) -> tuple[float, float]:
    policies = load_policies(REPO / "deploy" / "config" / "policies.yaml")
    scoring = Scoring(ScoringConfig(ClockConfig.from_policies(policies)), track_windows=False)
    start = datetime(2026, 3, 2, 6, tzinfo=UTC)
    template = EXAMPLES["gapwatch.ticket.opened.v1"]
    gc.collect()
    before = _rss_bytes()
    began = time.perf_counter()
    for i in range(items):
        doc = orjson.loads(orjson.dumps(template))
        at = (start + timedelta(milliseconds=i)).isoformat()
        item = f"M-{i}"
        doc.update(id=f"m-{i}", subject=item, time=at)
        doc["data"].update(ticket_id=item, opened_at=at, promises=[], customer_tier="standard")
        doc["data"].pop("sla_policy")
        scoring.process(validate_event(doc))
    elapsed = time.perf_counter() - began
    gc.collect()
    promises = sum(len(c.open_promises) for c in scoring.items.values())
    return (_rss_bytes() - before) / promises, items / elapsed


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def restart_time(settings: KafkaSettings, work: Path, items: int) -> tuple[float, str]:
    docs = []
    start = datetime.now(UTC) - timedelta(hours=1)
    for i in range(items):
        doc = orjson.loads(orjson.dumps(EXAMPLES["gapwatch.ticket.opened.v1"]))
        at = (start + timedelta(milliseconds=i)).isoformat()
        item = f"R-{i}"
        doc.update(id=f"r-{i}", subject=item, time=at)
        doc["data"].update(ticket_id=item, opened_at=at, promises=[])
        doc["data"].pop("sla_policy")
        docs.append(doc)
    asyncio.run(produce(settings, docs))
    port = 18952
    proc = start_scorer(settings, work, "restart", port, wall_clock=False)
    wait_ready(work / "restart.log", proc)
    while scorer_events(port) < items:
        time.sleep(0.5)
    time.sleep(3)  # let the table flush its changelog
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    began = time.perf_counter()
    proc = start_scorer(settings, work, "restart", port, wall_clock=False)
    try:
        log = work / "restart.log"
        while True:
            text = log.read_text(errors="replace")
            restored = re.findall(r"restored (\d+) items.* in ([0-9.]+)s", text)
            if restored and int(restored[-1][0]) > 0:
                return time.perf_counter() - began, f"{restored[-1][0]} items restored"
            if proc.poll() is not None or time.perf_counter() - began > 600:
                return time.perf_counter() - began, "did not finish"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--items", type=int, default=1_000_000, help="open items for memory")
    parser.add_argument("--restart-items", type=int, default=50_000)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gapwatch-bench-"))

    settings = fresh_settings(args.partitions)
    asyncio.run(ensure_topics(settings))
    docs = simulated(args.events, datetime(2026, 3, 2, tzinfo=UTC))
    asyncio.run(produce(settings, docs))
    print(
        f"broker {settings.kafka_bootstrap}, {args.partitions} partitions, "
        f"{len(docs)} simulated events, work dir {work}"
    )
    raw = asyncio.run(raw_consume_rate(settings, len(docs)))
    print(f"raw aiokafka consume (getmany + json + dict): {raw:10,.0f} events/s")
    rate = scorer_rate(settings, work, len(docs))
    print(
        f"scorer, one worker:                            {rate:10,.0f} events/s  "
        f"ratio {rate / raw:.3f}"
    )

    live = fresh_settings(args.partitions)
    asyncio.run(ensure_topics(live))
    target = max(10.0, rate / 2 / 2)  # two input events per ticket
    delays = asyncio.run(latency(live, work, target * 2, args.latency_seconds))
    if delays:
        delays.sort()
        p50 = statistics.median(delays)
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        print(
            f"latency input append -> gap append at {target * 2:,.0f} events/s: "
            f"p50 {p50:.0f} ms, p99 {p99:.0f} ms ({len(delays)} samples)"
        )
    else:
        print("latency: no samples")

    per_promise, core_rate = memory_per_open_promise(args.items)
    print(
        f"memory per open promise ({args.items:,} open tickets, core in-process): "
        f"{per_promise:,.0f} bytes  (core applied {core_rate:,.0f} opens/s)"
    )

    restart = fresh_settings(args.partitions)
    asyncio.run(ensure_topics(restart))
    seconds, what = restart_time(restart, work, args.restart_items)
    print(
        f"restart after kill -9 with {args.restart_items:,} items: {seconds:.1f} s to "
        f"restore ({what})"
    )


if __name__ == "__main__":
    main()

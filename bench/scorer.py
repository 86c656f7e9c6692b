"""Scorer benchmark on the real broker, beside a raw aiokafka consume loop in the same run.

Prints:
  1. raw: an aiokafka consumer (getmany + json.loads + a dict update) over the input topics;
  2. faust floor: a faust agent that takes the same events and does nothing (`faust_floor`);
     scorer: sustained events/s through one scorer worker over the same events (its own count);
     the scorer's per-event work on a plain aiokafka loop in this process (no faust): decode,
     score, produce the gap events, save each touched item (RocksDB + changelog);
  3. latency from input append to gap-event append at about half the scorer's rate (p50/p99);
  4. memory per open promise, in-process, with --items open tickets (two promises each);
  5. restart time of a worker holding --restart-items items: written straight to the items
     changelog, recovered by a cold start, then the worker is killed -9 and started again on
     its local RocksDB.

    .venv/bin/python -m bench.scorer [--events 60000] [--items 1000000] [--restart-items 1000000]
    .venv/bin/python -m bench.scorer --only restart --restart-items 1000000
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
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import NewTopic
from aiokafka.partitioner import murmur2
from prometheus_client import CollectorRegistry
from rocksdict import Rdict

from bench.common import REPO, delete_topics, kafka_bootstrap
from gapwatch.config import load_policies
from gapwatch.core.clock import ClockConfig
from gapwatch.core.examples import EXAMPLES
from gapwatch.core.scoring import Scoring, ScoringConfig
from gapwatch.core.topics import INPUT_STREAMS, Stream, topic_name
from gapwatch.core.validation import EventRejected, decode_event, validate_event
from gapwatch.kafka.clients import admin_client, consumer, reliable_producer
from gapwatch.kafka.settings import KafkaSettings
from gapwatch.kafka.topics import ensure_topics
from gapwatch.simulation import Scenario, Simulator
from gapwatch_scorer.app import OutRecord, ScorerService
from gapwatch_scorer.settings import ScorerSettings


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


def input_reader(settings: KafkaSettings, group: str) -> AIOKafkaConsumer:
    """A consumer of the input topics from their start, in a group of its own."""
    return consumer(
        settings,
        *(topic_name(s, settings.topic_prefix) for s in INPUT_STREAMS),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=f"{group}-{uuid.uuid4().hex[:6]}",
        max_partition_fetch_bytes=4 << 20,
    )


async def raw_consume_rate(settings: KafkaSettings, expected: int) -> float:
    reader = input_reader(settings, "raw")
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


async def core_on_aiokafka_rate(
    settings: KafkaSettings, work: Path, expected: int
) -> tuple[float, dict[str, float]]:
    """Events/s of the scorer's per-event work on a plain aiokafka loop, without faust, and the
    µs an event spent scoring (decode + engine + gap encoding), awaiting the gap events' acks,
    and saving.

    The ceiling of a leaner input path: batches from `getmany`, each event decoded and scored
    by its partition's engine (the scorer's own `ScorerService` configuration and gap-event
    encoding), the gap events produced (on the gaps and segment topics, as the scorer does)
    and their acks awaited per batch, then each touched
    item saved once: `to_bytes`, a local RocksDB put and a changelog record, as the items
    table does. No windows stage, no group rebalances, no offset commits. Run after the
    scorer: its gap events go to the same gaps topic.
    """
    prefix = settings.topic_prefix
    service = ScorerService(
        ScorerSettings(
            kafka_bootstrap=settings.kafka_bootstrap,
            topic_prefix=prefix,
            kafka_partitions=settings.kafka_partitions,
        ),
        CollectorRegistry(),
    )
    changelog = f"{prefix}lean-items-changelog"
    admin = admin_client(settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(changelog, settings.kafka_partitions, 1)])
    finally:
        await admin.close()
    reader = input_reader(settings, "lean")
    store = Rdict(str(work / "lean-store"))
    await reader.start()
    await service.start()
    seen = 0
    spent = dict.fromkeys(("score", "produce", "save"), 0.0)
    try:
        started = None
        while seen < expected:
            batch = await reader.getmany(timeout_ms=1000, max_records=500)
            if started is None and batch:
                started = time.perf_counter()
            began = time.perf_counter()
            records: list[OutRecord] = []
            touched: dict[str, tuple[int, Any]] = {}
            for tp, messages in batch.items():
                scoring = service.partition(tp.partition).scoring
                for message in messages:
                    seen += 1
                    try:
                        decoded = decode_event(message.value or b"")
                        gaps = scoring.process_and_tick(decoded)
                    except (EventRejected, ValueError):
                        continue  # the scorer would dead-letter it; the bench's input is valid
                    for gap in gaps:
                        records.extend(service.gap_records(gap))
                    touched[decoded.subject] = (tp.partition, scoring.items[decoded.subject])
            scored = time.perf_counter()
            # The scorer's own output path: one batch per partition, every ack awaited.
            await service.produce(records)
            produced = time.perf_counter()
            saves: dict[int, list[tuple[bytes, bytes]]] = {}
            for item_id, (number, clock) in touched.items():
                key, value = orjson.dumps(item_id), clock.to_bytes()
                store[key] = value
                saves.setdefault(number, []).append((key, value))
            await service.send_changelog(changelog, saves)
            spent["score"] += scored - began
            spent["produce"] += produced - scored
            spent["save"] += time.perf_counter() - produced
        assert started is not None
        rate = seen / (time.perf_counter() - started)
        return rate, {phase: seconds / seen * 1e6 for phase, seconds in spent.items()}
    finally:
        await service.stop()
        await reader.stop()
        store.close()


def start_scorer(
    settings: KafkaSettings,
    work: Path,
    name: str,
    port: int,
    wall_clock: bool,
    log_name: str | None = None,
    instance: str | None = None,
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GAPWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "GAPWATCH_TOPIC_PREFIX": settings.topic_prefix,
        "GAPWATCH_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "GAPWATCH_SCORER_PORT": str(port),
        "GAPWATCH_SCORER_DATA_DIR": str(work / f"state-{name}"),
        "GAPWATCH_SCORER_WALL_CLOCK": "true" if wall_clock else "false",
        "GAPWATCH_SCORER_SNAPSHOT_SECONDS": os.environ.get("GAPWATCH_SCORER_SNAPSHOT_SECONDS", "5"),
    }
    if instance is not None:
        env["GAPWATCH_SCORER_INSTANCE_ID"] = instance
    log = (work / f"{log_name or name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "gapwatch_scorer"], env=env, stdout=log, stderr=log, cwd=REPO
    )


def stop_scorer(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 60 s: faust has been seen to hang in shutdown when the
    signal lands while it is still subscribing to its repartition topic."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        print(f"scorer {proc.pid} did not stop within 60 s of SIGTERM; killed", file=sys.stderr)
        proc.kill()
        proc.wait(30)


def scorer_events(port: int) -> float:
    """Input events the scorer has scored, from `/healthz`: polled every 0.2 s, a `/metrics`
    scrape (~100 ms of the worker's one core each) would take a quarter of what it measures."""
    try:
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
    except httpx.HTTPError:
        return -1.0
    return float(health["events_scored"])


def wait_ready(log: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> float:
    started = time.perf_counter()
    while "Worker ready" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.perf_counter() - started > timeout:
            raise SystemExit(f"scorer failed to start; see {log}")
        time.sleep(0.1)
    return time.perf_counter() - started


def faust_floor_rate(settings: KafkaSettings, expected: int, *options: str) -> float:
    """Events/s that a faust agent doing nothing takes from the same topics (`faust_floor`)."""
    env = {
        **os.environ,
        "GAPWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "GAPWATCH_TOPIC_PREFIX": settings.topic_prefix,
        "GAPWATCH_KAFKA_PARTITIONS": str(settings.kafka_partitions),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.faust_floor", str(expected), *options],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # faust's worker routes stdout through its logging, so the line may land on either stream.
    found = re.search(r"faust-floor (\d+) ([0-9.]+)", done.stdout + done.stderr)
    if found is None:
        raise SystemExit(f"faust floor run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return int(found[1]) / max(float(found[2]), 1e-9)


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
        stop_scorer(proc)


async def latency(
    settings: KafkaSettings, work: Path, rate: float, seconds: float, tick: float = 0.01
) -> tuple[list[tuple[float, float]], int]:
    """Produce live ticket events at `rate`/s (opened + replied pairs), sent every `tick`
    seconds for `seconds`; for each reply's gap event, (seconds into the run it was sent,
    gap append - input append in ms); and the number of replies sent."""
    port = 18951
    proc = start_scorer(settings, work, "latency", port, wall_clock=True)
    wait_ready(work / "latency.log", proc)
    producer = reliable_producer(settings)
    await producer.start()
    appended: dict[str, float] = {}
    sent_at: dict[str, float] = {}  # seconds into the run
    tickets = topic_name(Stream.TICKETS, settings.topic_prefix)
    try:
        n = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            began = time.perf_counter()
            acks = []
            # Pairs due by now, not per tick: a tick that overruns does not lower the rate.
            due = int((began - started) * rate / 2) + 1
            for _ in range(due - n):  # two events (opened, replied) each
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
                sent_at[event_id] = began - started
            await asyncio.sleep(max(0.0, tick - (time.perf_counter() - began)))
        # Wait for the scorer to take every event, so a scorer that fell behind shows in the
        # figures instead of dropping its slowest events from them.
        for _ in range(240):  # at most 2 minutes
            if scorer_events(port) >= 2 * n:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)
    finally:
        await producer.stop()
        stop_scorer(proc)
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
                        delay = (record.timestamp / 1000 - appended[cause]) * 1000
                        delays.append((sent_at[cause], delay))
    finally:
        await reader.stop()
    return delays, n


def percentiles(delays: list[float]) -> str:
    if not delays:
        return "no samples"
    delays = sorted(delays)
    p50 = statistics.median(delays)
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    return f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {delays[-1]:.0f} ms ({len(delays)} samples)"


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


RESTORED = re.compile(r"restored (\d+) items of partitions \[(\d+)\] in ([0-9.]+)s")


def saved_clocks(items: int, distinct: int = 20_000) -> Iterator[tuple[str, bytes]]:
    """(item id, saved clock) of `items` open tickets, as the scorer's table holds them.

    `distinct` tickets (opened over the last hour, one a 180 ms, teams and priorities varying)
    go through the scoring core; the rest are copies of them under other ids, which is all a
    restore can tell apart (it reads summaries, not logs).
    """
    policies = load_policies(REPO / "deploy" / "config" / "policies.yaml")
    scoring = Scoring(ScoringConfig(ClockConfig.from_policies(policies)), track_windows=False)
    start = datetime.now(UTC) - timedelta(hours=1)
    template = EXAMPLES["gapwatch.ticket.opened.v1"]
    base = []
    for i in range(min(items, distinct)):
        doc = orjson.loads(orjson.dumps(template))
        at = (start + timedelta(milliseconds=180 * i)).isoformat()
        item = f"R{i:06d}"
        doc.update(id=f"r{i:06d}", subject=item, time=at)
        doc["data"].update(
            ticket_id=item,
            opened_at=at,
            promises=[],
            team=("billing", "support", "network", "onboarding")[i % 4],
            priority=("P1", "P2", "P3")[i % 3],
        )
        doc["data"].pop("sla_policy")
        scoring.process(validate_event(doc))
        base.append((item, scoring.items[item].to_bytes()))
    for copy in range(-(-items // len(base))):
        for item, saved in base:
            if copy:
                new = f"{item}-{copy:03d}"
                saved = saved.replace(f'"{item}"'.encode(), f'"{new}"'.encode())
                saved = saved.replace(f'"r{item[1:]}"'.encode(), f'"r{new[1:]}"'.encode())
                item = new
            yield item, saved
            items -= 1
            if not items:
                return


async def write_changelog(settings: KafkaSettings, topic: str, items: int) -> None:
    """Write saved clocks straight to the items table's changelog, keyed and partitioned as
    faust writes them (JSON-encoded item id; the partition of the item's input events)."""
    producer = reliable_producer(settings)
    await producer.start()
    try:
        acks = []
        for item, saved in saved_clocks(items):
            partition = (murmur2(item.encode()) & 0x7FFFFFFF) % settings.kafka_partitions
            acks.append(
                await producer.send(topic, saved, key=orjson.dumps(item), partition=partition)
            )
            if len(acks) >= 5000:
                await asyncio.gather(*acks)
                acks = []
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def changelog_topic(settings: KafkaSettings) -> str:
    admin = admin_client(settings)
    await admin.start()
    try:
        topics = await admin.list_topics()
    finally:
        await admin.close()
    found = [
        t for t in topics if t.startswith(settings.topic_prefix) and t.endswith("-items-changelog")
    ]
    if len(found) != 1:
        raise SystemExit(f"expected one items changelog topic, found {found}")
    return str(found[0])


def wait_restored(
    log: Path, proc: subprocess.Popen[bytes], partitions: int, began: float
) -> tuple[float, int]:
    """Seconds from `began` until every partition logged its restore, and the items restored."""
    while True:
        done = {int(p): int(n) for n, p, _ in RESTORED.findall(log.read_text(errors="replace"))}
        if len(done) == partitions:
            return time.perf_counter() - began, sum(done.values())
        if proc.poll() is not None or time.perf_counter() - began > 900:
            raise SystemExit(f"scorer did not restore every partition; see {log}")
        time.sleep(0.1)


def restart_time(settings: KafkaSettings, work: Path, items: int) -> dict[str, float]:
    """Cold start (changelog recovery + restore), then kill -9 and restart on the local
    RocksDB: with dynamic group membership (the default), then with static membership
    (`GAPWATCH_SCORER_INSTANCE_ID`)."""
    port = 18952
    partitions = settings.kafka_partitions
    proc = start_scorer(settings, work, "restart-empty", port, wall_clock=False)
    wait_ready(work / "restart-empty.log", proc)
    stop_scorer(proc)
    began = time.perf_counter()
    asyncio.run(write_changelog(settings, asyncio.run(changelog_topic(settings)), items))
    figures = {"write_changelog_s": time.perf_counter() - began}

    def run(log_name: str, instance: str | None) -> subprocess.Popen[bytes]:
        began = time.perf_counter()
        proc = start_scorer(
            settings, work, "restart", port, wall_clock=False, log_name=log_name, instance=instance
        )
        seconds, restored = wait_restored(work / f"{log_name}.log", proc, partitions, began)
        text = (work / f"{log_name}.log").read_text(errors="replace")
        figures[f"{log_name}_s"] = seconds
        figures[f"{log_name}_items"] = restored
        figures[f"{log_name}_restore_s"] = sum(float(t) for _, _, t in RESTORED.findall(text))
        return proc

    def kill(proc: subprocess.Popen[bytes]) -> None:
        proc.kill()
        proc.wait(30)

    proc = run("cold", None)
    time.sleep(3)  # let RocksDB settle, as a worker that ran a while would be
    figures["rss_bytes"] = _process_rss(proc.pid)
    kill(proc)
    stop_scorer(run("dynamic", None))  # leaves the group: the next start waits for none
    kill(run("static-first", "bench-1"))
    stop_scorer(run("static", "bench-1"))
    return figures


def _process_rss(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--items", type=int, default=1_000_000, help="open items for memory")
    parser.add_argument("--restart-items", type=int, default=1_000_000)
    parser.add_argument(
        "--only", choices=("rate", "latency", "memory", "restart"), help="run one phase only"
    )
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--latency-rate",
        type=float,
        help="events/s for the latency phase (default: half the measured scorer rate)",
    )
    parser.add_argument(
        "--latency-warmup-seconds",
        type=float,
        default=5.0,
        help="the latency phase first sends at its rate for this long; those events' figures "
        "are printed apart (a worker's first seconds include its start-up rebalances)",
    )
    parser.add_argument(
        "--latency-tick-ms",
        type=float,
        default=10.0,
        help="the latency phase sends the events due every this many ms (100: bursts of "
        "rate/10 events, as the bench sent them until 2026-11-23)",
    )
    parser.add_argument(
        "--keep-topics", action="store_true", help="leave the run's topics on the broker"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gapwatch-bench-"))
    print(f"broker {kafka_bootstrap()}, {args.partitions} partitions, work dir {work}")
    made: list[KafkaSettings] = []  # each phase's topics, deleted at the end
    try:
        phases = {args.only} if args.only else {"rate", "latency", "memory", "restart"}
        rate = None
        if "rate" in phases:
            settings = fresh_settings(args.partitions)
            made.append(settings)
            asyncio.run(ensure_topics(settings))
            docs = simulated(args.events, datetime(2026, 3, 2, tzinfo=UTC))
            asyncio.run(produce(settings, docs))
            raw = asyncio.run(raw_consume_rate(settings, len(docs)))
            print(f"{len(docs)} simulated events")
            print(f"raw aiokafka consume (getmany + json + dict): {raw:10,.0f} events/s")
            floor = faust_floor_rate(settings, len(docs))
            print(
                f"faust agent doing nothing (take_events 500):   {floor:10,.0f} events/s  "
                f"ratio {floor / raw:.3f}"
            )
            per_event = faust_floor_rate(settings, len(docs), "--per-event")
            print(
                f"faust agent doing nothing (per event):         {per_event:10,.0f} events/s  "
                f"ratio {per_event / raw:.3f}"
            )
            rate = scorer_rate(settings, work, len(docs))
            print(
                f"scorer, one worker:                            {rate:10,.0f} events/s  "
                f"ratio {rate / raw:.3f} (to the faust floor {rate / floor:.3f})"
            )
            lean, spent = asyncio.run(core_on_aiokafka_rate(settings, work, len(docs)))
            print(
                f"scorer's work on plain aiokafka (no faust):    {lean:10,.0f} events/s  "
                f"ratio {lean / raw:.3f} (the scorer does {rate / lean:.3f} of it)"
            )
            print("  µs an event: " + ", ".join(f"{k} {v:.0f}" for k, v in spent.items()))

        if "latency" in phases:
            live = fresh_settings(args.partitions)
            made.append(live)
            asyncio.run(ensure_topics(live))
            events_per_second = args.latency_rate or max(20.0, (rate or 1000.0) / 2)
            tick = args.latency_tick_ms / 1000
            warmup = args.latency_warmup_seconds
            delays, replies = asyncio.run(
                latency(live, work, events_per_second, warmup + args.latency_seconds, tick)
            )
            print(
                f"latency input append -> gap append at {events_per_second:,.0f} events/s "
                f"(sent every {args.latency_tick_ms:g} ms), {replies} replies:"
            )
            for label, sample in (
                (f"after the first {warmup:g} s", [d for at, d in delays if at >= warmup]),
                (f"the worker's first {warmup:g} s", [d for at, d in delays if at < warmup]),
            ):
                print(f"  {label}: {percentiles(sample)}")

        if "memory" in phases:
            per_promise, core_rate = memory_per_open_promise(args.items)
            print(
                f"memory per open promise ({args.items:,} open tickets, core in-process): "
                f"{per_promise:,.0f} bytes  (core applied {core_rate:,.0f} opens/s)"
            )

        if "restart" in phases:
            restart = fresh_settings(args.partitions)
            made.append(restart)
            asyncio.run(ensure_topics(restart))
            f = restart_time(restart, work, args.restart_items)
            print(
                f"restart with {args.restart_items:,} items "
                f"(written to the items changelog in {f['write_changelog_s']:.0f} s):\n"
                f"  cold start, recovery from the changelog + restore: {f['cold_s']:.1f} s "
                f"({f['cold_items']:,.0f} items, restore {f['cold_restore_s']:.1f} s; worker RSS "
                f"{f['rss_bytes'] / 2**20:,.0f} MiB)"
            )
            for name, what in (("dynamic", "dynamic membership"), ("static", "static membership")):
                print(
                    f"  after kill -9, local RocksDB, {what}: {f[name + '_s']:.1f} s from process "
                    f"start to every partition restored ({f[name + '_items']:,.0f} items, restore "
                    f"{f[name + '_restore_s']:.1f} s)"
                )

    finally:
        if not args.keep_topics:
            asyncio.run(delete_topics(made))


if __name__ == "__main__":
    main()

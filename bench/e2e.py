"""End-to-end load: the simulator drives ingest → scorer → alerter at rising rates until it breaks.

Runs on the real broker and PostgreSQL from `make infra`, on fresh prefixed topics, a fresh
PostgreSQL schema (both removed afterwards) and fresh scorer state, in one run:
  1. raw baselines on the same broker: an idempotent acks=all aiokafka producer sending simulator
     events (bench/ingest.py's loop) and an aiokafka consume loop over them (bench/scorer.py's);
  2. ingest, --workers scorer workers and the alerter as real processes (`python -m
     gapwatch_ingest` / `gapwatch_scorer` / `gapwatch_alerter`, the entry points `make run`,
     `make scorer` and `make alerter` start), with the repo's alert rules
     (deploy/config/alerts.yaml; receivers replaced by a webhook this script serves) and the
     demo's 24x7 policy (deploy/demo/policies.yaml: business calendars would stand still across
     the nights that an accelerated simulation crosses);
  3. steps at rising target rates (--steps, events/s, --step-seconds each): a separate driver
     process takes the simulator's team-slip stream (event time about --speed x the wall clock,
     as in `make demo`; a different team slips in each step, so each step can page) and POSTs
     it in batches of --batch to /v1/events, with at most --concurrency requests in flight.
     Each step prints what was offered and accepted, the scorer's input and gap-event rates and
     consumer lag, the latency from the HTTP 202 to the gap event each accepted delivery caused
     (met, delivered_late, cancelled: caused_by = the input event id; Kafka timestamp of the gap
     event minus the wall time the 202 came back), the latency from a breach to the alert that
     names it (Kafka timestamp of the firing transition on gapwatch.alerts.v1 minus that of the
     newest breach gap event among its `latest_breached`), the promises view's lag behind the
     scorer (the alerter's `gapwatch_alerter_promise_view_lag_seconds`: a promise-state record's
     append to its commit in the view, as histogram buckets), and CPU % (of one core) and peak
     RSS per process tree from /proc;
  4. the sustained rate (the highest step that did not break) beside the raw rates, and ratios.

A step breaks when ingest accepted < 90 % of the target rate, the HTTP p99 exceeds
--max-http-p99, the scorer's consumer lag (input end offsets minus its group's committed
offsets, sampled every second) still grows in the second half of the step by more than 5 % of
the accepted rate (least-squares slope: the scorer consumes < 95 % of what is accepted once the
first half has let its batches grow), or the accept → gap p99 exceeds --max-gap-p99. The run
stops at the first broken step unless --keep-going.

    .venv/bin/python -m bench.e2e [--steps 250,500,1000,2000,5000,10000,20000] [--step-seconds 60]
        [--partitions 6] [--workers 1] [--batch 500] [--concurrency 8] [--keep-going]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.alerter import HOOK_SECRET, Hook, cleanup, database_url, free_port, pct, stop_process
from bench.common import REPO, ProcessSampler, kafka_bootstrap
from bench.ingest import raw_producer_rate
from bench.scorer import raw_consume_rate, simulated
from gapwatch.core.topics import INPUT_STREAMS, Stream, topic_name
from gapwatch.kafka.clients import admin_client, consumer
from gapwatch.kafka.settings import KafkaSettings
from gapwatch.kafka.topics import ensure_topics
from gapwatch.simulate import EVENTS_PER_ITEM
from gapwatch.simulation import TICKET_TEAMS, Scenario, Simulator
from gapwatch_scorer.input_reader import GROUP_SUFFIX as CLOCKS_GROUP_SUFFIX

TOKEN = "bench-token"
GOAL = 20_000.0  # events/s end to end, issue #6
RULES = REPO / "deploy" / "config" / "alerts.yaml"
POLICIES = REPO / "deploy" / "demo" / "policies.yaml"
SCORER_APP_ID = "gapwatch-scorer"
TICK = 0.1  # seconds between the driver's sends
SEED = 11
# Outcomes emitted as soon as the scorer reads the input event that caused them. Breaches and
# at-risk levels name the event that opened the promise, so they measure event time, not lag.
DIRECT = (b"met", b"delivered_late", b"cancelled")
GAP_TYPE = re.compile(rb'"type":\s*"gapwatch\.gap\.([a-z_]+)\.v1"')
CAUSED_BY = re.compile(rb'"caused_by":\s*"sim-\d+-(\d+)"')
ITEM_ID = re.compile(rb'"item_id":\s*"([^"]+)"')
METRIC = r"^{}(?:\{{[^}}]*\}})? (\S+)$"
VIEW_LAG_BUCKET = re.compile(
    r'^gapwatch_alerter_promise_view_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M
)


# --- the driver: a separate process that turns the simulator into HTTP load -------------------


class Driver:
    """Posts the simulator's stream to the ingest API at a target rate, step by step.

    The offered rate is exact: each tick takes as many events as the target rate owes so far
    from the simulator's event-time-ordered stream, whose clock advances only as far as needed.
    The simulator's item rate is set so that, once its mix is steady, event time runs `speed`
    times the wall clock; right after a rise it runs faster for a while (fewer late-lifecycle
    events are due yet).
    """

    def __init__(self, url: str, speed: float, batch: int, concurrency: int) -> None:
        self.start = datetime.now(UTC)
        self.sim = Simulator(start=self.start, items_per_second=1.0, seed=SEED)
        self.clock = self.start
        self.speed = speed
        self.batch = batch
        self.concurrency = concurrency
        self.buffer: deque[dict[str, Any]] = deque()
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.http = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            limits=limits,
            timeout=60,
        )

    def pull(self, count: int) -> list[dict[str, Any]]:
        while len(self.buffer) < count:
            self.clock += timedelta(seconds=self.speed * TICK)
            self.buffer.extend(self.sim.events_until(self.clock))
        return [self.buffer.popleft() for _ in range(count)]

    async def step(self, rate: float, seconds: float, slip_team: str) -> dict[str, Any]:
        self.sim.items_per_second = rate / EVENTS_PER_ITEM / self.speed
        minutes = (self.clock - self.start).total_seconds() / 60
        # The step's team slips from now until well past the step's end (the next step moves
        # the slip to another team).
        self.sim.scenario = Scenario.named(
            "team-slip",
            slip_team=slip_team,
            slip_start_minutes=minutes,
            slip_end_minutes=minutes + 4 * seconds * self.speed / 60,
        )
        out: dict[str, Any] = {
            "offered": 0,
            "sent": 0,
            "accepted": 0,
            "statuses": {},
            "http_ms": [],
            "ids": array("q"),
            "accepted_at": array("d"),
        }
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        clock = self.clock
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < seconds:
            events = self.pull(int(rate * elapsed) - out["offered"])
            out["offered"] += len(events)
            for offset in range(0, len(events), self.batch):
                await slots.acquire()  # waits while `concurrency` requests are in flight
                if time.monotonic() - began >= seconds:
                    slots.release()
                    break
                task = asyncio.create_task(
                    self.post(events[offset : offset + self.batch], slots, out)
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(max(0.0, TICK - (time.monotonic() - began - elapsed)))
        if tasks:
            await asyncio.gather(*tasks)
        out["seconds"] = time.monotonic() - began
        out["speed"] = (self.clock - clock).total_seconds() / out["seconds"]
        return out

    async def post(
        self, events: list[dict[str, Any]], slots: asyncio.Semaphore, out: dict[str, Any]
    ) -> None:
        body = orjson.dumps(events)
        ids = array("q", (int(e["id"].rsplit("-", 1)[1]) for e in events))
        out["sent"] += len(events)
        started = time.perf_counter()
        try:
            response = await self.http.post("/v1/events", content=body)
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        finally:
            slots.release()
        answered = time.time()
        out["http_ms"].append((time.perf_counter() - started) * 1000)
        out["statuses"][status] = out["statuses"].get(status, 0) + 1
        if status == 202:
            out["accepted"] += len(events)
            out["ids"].extend(ids)
            out["accepted_at"].extend(array("d", [answered]) * len(ids))


def _drive(conn: Any, url: str, speed: float, batch: int, concurrency: int) -> None:
    """The driver process: runs one step per (rate, seconds, team) command; None stops it."""

    async def serve() -> None:
        driver = Driver(url, speed, batch, concurrency)
        async with driver.http:
            conn.send("ready")
            while (command := await asyncio.to_thread(conn.recv)) is not None:
                conn.send(await driver.step(*command))

    asyncio.run(serve())


# --- the services -----------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path


def spawn(name: str, module: str, env: dict[str, str], work: Path, url: str) -> Service:
    log = work / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
        )
    return Service(name, process, url, log)


def wait_ready(service: Service, ready: Callable[[Service], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            tail = service.log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"{service.name} exited with {service.process.returncode}:\n{tail}")
        try:
            if ready(service):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    raise SystemExit(f"{service.name} not ready within {timeout:.0f} s; see {service.log}")


def start_services(
    settings: KafkaSettings, dsn: str, schema: str, work: Path, workers: int, hook_url: str
) -> list[Service]:
    base = {
        **os.environ,
        "GAPWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "GAPWATCH_TOPIC_PREFIX": settings.topic_prefix,
        "GAPWATCH_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        # Event time runs --speed times the wall clock: every service accepts it that far ahead.
        "GAPWATCH_MAX_FUTURE_SKEW_SECONDS": str(30 * 86400),
    }
    rules = yaml.safe_load(RULES.read_text())
    rules["receivers"] = [
        {"name": "hook", "type": "webhook", "url": hook_url, "secret_env": "BENCH_HOOK_SECRET"}
    ]
    rules["routes"] = [{"receivers": ["hook"]}]
    rules["default_receivers"] = ["hook"]
    (work / "alerts.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    services = []
    port = free_port()
    ingest = spawn(
        "ingest",
        "gapwatch_ingest",
        {**base, "GAPWATCH_INGEST_PORT": str(port), "GAPWATCH_INGEST_TOKENS": TOKEN},
        work,
        f"http://127.0.0.1:{port}",
    )
    services.append(ingest)
    for n in range(workers):
        port = free_port()
        env = {
            **base,
            "GAPWATCH_SCORER_APP_ID": SCORER_APP_ID,
            "GAPWATCH_SCORER_PORT": str(port),
            "GAPWATCH_SCORER_DATA_DIR": str(work / f"scorer-state-{n}"),
            "GAPWATCH_SCORER_POLICIES_FILE": str(POLICIES),
            # As `make demo`: event time runs far ahead of the wall clock, so the windows
            # follow it and snapshots an hour of event time apart are not stale.
            "GAPWATCH_SCORER_SNAPSHOT_SECONDS": "2",
            "GAPWATCH_SCORER_WINDOWS_LEAD_SECONDS": str(30 * 86400),
        }
        services.append(
            spawn(f"scorer-{n}", "gapwatch_scorer", env, work, f"http://127.0.0.1:{port}")
        )
    port = free_port()
    alerter = spawn(
        "alerter",
        "gapwatch_alerter",
        {
            **base,
            "GAPWATCH_DATABASE_URL": dsn,
            "GAPWATCH_ALERTER_DB_SCHEMA": schema,
            "GAPWATCH_ALERTER_RULES_FILE": str(work / "alerts.yaml"),
            "GAPWATCH_ALERTER_PORT": str(port),
            "GAPWATCH_ALERTER_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "GAPWATCH_ALERTER_TOKENS": TOKEN,
            "GAPWATCH_ALERTER_STALE_SECONDS": "3600",
            "BENCH_HOOK_SECRET": HOOK_SECRET,
        },
        work,
        f"http://127.0.0.1:{port}",
    )
    services.append(alerter)
    try:
        wait_ready(ingest, lambda s: httpx.get(s.url + "/readyz", timeout=2).status_code == 200)
        for scorer in services[1:-1]:
            wait_ready(scorer, lambda s: "Worker ready" in s.log.read_text(errors="replace"))
        wait_ready(
            alerter,
            lambda s: httpx.get(s.url + "/readyz", timeout=2).json().get("status") == "ready",
        )
    except BaseException:
        for service in services:
            stop_process(service.process)
        raise
    return services


# --- what the main process watches ------------------------------------------------------------


@dataclass
class Observer:
    """Reads the gap and alert topics, and samples lag, counters, CPU and memory."""

    settings: KafkaSettings
    scorer_urls: list[str]
    alerter_url: str
    sampler: ProcessSampler
    direct: list[tuple[int, int]] = field(default_factory=list)  # (simulator seq, gap ms)
    breached_at: dict[bytes, int] = field(default_factory=dict)  # item id -> first breach ms
    firing: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (ms, alert data)
    lags: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, records)
    gaps_read: int = 0
    done: bool = False
    offsets: AIOKafkaConsumer = field(init=False)
    admin: AIOKafkaAdminClient = field(init=False)
    http: httpx.AsyncClient = field(init=False)
    tasks: list[asyncio.Task[None]] = field(init=False)

    def topic(self, stream: Stream) -> str:
        return topic_name(stream, self.settings.topic_prefix)

    def parts(self, *streams: Stream) -> list[TopicPartition]:
        return [
            TopicPartition(self.topic(s), p)
            for s in streams
            for p in range(self.settings.kafka_partitions)
        ]

    async def start(self) -> None:
        self.offsets = consumer(self.settings)
        self.admin = admin_client(self.settings)
        self.http = httpx.AsyncClient(timeout=10)
        await self.offsets.start()
        await self.admin.start()
        self.tasks = [
            asyncio.create_task(self.follow_gaps()),
            asyncio.create_task(self.follow_alerts()),
            asyncio.create_task(self.every_second()),
        ]

    async def stop(self) -> None:
        self.done = True
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.offsets.stop()
        await self.admin.close()
        await self.http.aclose()

    async def follow_gaps(self) -> None:
        reader = consumer(
            self.settings,
            self.topic(Stream.GAPS),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_partition_fetch_bytes=4 << 20,
        )
        await reader.start()
        try:
            while not self.done:
                batch = await reader.getmany(timeout_ms=500, max_records=20_000)
                for records in batch.values():
                    for record in records:
                        self.gaps_read += 1
                        value = record.value or b""
                        kind = GAP_TYPE.search(value)
                        if kind is None:
                            continue
                        if kind[1] in DIRECT:
                            cause = CAUSED_BY.search(value)
                            if cause is not None:
                                self.direct.append((int(cause[1]), record.timestamp))
                        elif kind[1] == b"breached":
                            item = ITEM_ID.search(value)
                            if item is not None:
                                self.breached_at.setdefault(item[1], record.timestamp)
        finally:
            await reader.stop()

    async def follow_alerts(self) -> None:
        reader = consumer(
            self.settings,
            self.topic(Stream.ALERTS),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await reader.start()
        try:
            while not self.done:
                batch = await reader.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        data = orjson.loads(record.value or b"{}").get("data", {})
                        if data.get("to_state") == "firing":
                            self.firing.append((record.timestamp, data))
        finally:
            await reader.stop()

    async def end(self, *streams: Stream) -> int:
        return sum((await self.offsets.end_offsets(self.parts(*streams))).values())

    async def lag(self) -> int:
        """Input records not yet committed by the scorer's input reader (its clocks stage)."""
        parts = self.parts(*INPUT_STREAMS)
        ends = await self.offsets.end_offsets(parts)
        committed = await self.admin.list_consumer_group_offsets(
            self.settings.topic_prefix + SCORER_APP_ID + CLOCKS_GROUP_SUFFIX, partitions=parts
        )
        done = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
        return sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())

    async def every_second(self) -> None:
        while not self.done:
            started = time.monotonic()
            self.sampler.sample()
            try:
                self.lags.append((time.monotonic(), await self.lag()))
            except Exception as exc:  # a slow broker must not end the run
                print(f"  (lag sample failed: {exc!r})")
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))

    async def scorer_counter(self, name: str) -> float:
        total = 0.0
        for url in self.scorer_urls:
            text = (await self.http.get(url + "/metrics")).text
            total += sum(float(v) for v in re.findall(METRIC.format(name), text, re.M))
        return total

    async def view_lag_buckets(self) -> dict[float, float]:
        """The alerter's promise-view lag histogram: cumulative count by upper bound (s)."""
        text = (await self.http.get(self.alerter_url + "/metrics")).text
        return {float(bound): float(count) for bound, count in VIEW_LAG_BUCKET.findall(text)}

    async def counters(self) -> dict[str, float]:
        return {
            "at": time.monotonic(),
            "gaps": await self.end(Stream.GAPS),
            "scored": await self.scorer_counter("gapwatch_scorer_events_total"),
            "dead": await self.scorer_counter("gapwatch_scorer_dead_letters_total"),
            "lag": await self.lag(),
        }


# --- one step's figures -----------------------------------------------------------------------


@dataclass
class Step:
    index: int
    target: float
    team: str
    load: dict[str, Any]
    before: dict[str, float]
    after: dict[str, float]
    usage: dict[str, tuple[float, int]]
    mid_lag: int
    max_lag: int
    lag_slope: float  # records/s over the second half of the step
    unread_after_settle: int
    settle_seconds: float
    gap_ms: list[float]
    alerts: list[tuple[dict[str, Any], float | None]]
    view_lag_before: dict[float, float]
    view_lag_after: dict[float, float]
    reasons: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.after["at"] - self.before["at"]

    @property
    def achieved(self) -> float:
        return float(self.load["accepted"] / self.load["seconds"])

    @property
    def offered(self) -> float:
        return float(self.load["offered"] / self.load["seconds"])

    @property
    def consumed(self) -> float:
        return (self.after["scored"] - self.before["scored"]) / self.seconds

    @property
    def gaps(self) -> float:
        return (self.after["gaps"] - self.before["gaps"]) / self.seconds

    def http_p(self, q: float) -> float:
        values = sorted(self.load["http_ms"])
        return pct(values, q) if values else math.nan

    def gap_p(self, q: float) -> str:
        """A percentile of accept → gap, or a lower bound when too many events were never read
        (their gap events came after the settling time, if at all)."""
        censored = self.unread_after_settle / max(1, self.load["accepted"])
        if censored > 1 - q:
            return f"> {self.settle_seconds:.0f} s"
        if not self.gap_ms:
            return "n/a"
        return seconds(pct(self.gap_ms, q) / 1000)

    def view_lag(self, q: float) -> str:
        """A percentile of the promises view's lag behind the scorer over the step and its
        settling, as the histogram bucket holding it ("<= 500 ms"), from the alerter's own
        histogram."""
        before, after = self.view_lag_before, self.view_lag_after
        counts = sorted((bound, n - before.get(bound, 0.0)) for bound, n in after.items())
        total = counts[-1][1] if counts else 0.0
        if not total:
            return "n/a"
        for bound, n in counts:
            if n >= q * total:
                return "> 300 s" if math.isinf(bound) else f"<= {seconds(bound)}"
        return "n/a"

    def judge(self, args: argparse.Namespace) -> None:
        if self.achieved < 0.9 * self.target:
            self.reasons.append(f"ingest accepted {self.achieved / self.target:.0%} of the target")
        if self.http_p(0.99) > args.max_http_p99:
            self.reasons.append(f"HTTP p99 {self.http_p(0.99):,.0f} ms > {args.max_http_p99:g}")
        if self.lag_slope > 0.05 * self.achieved:
            self.reasons.append(
                f"scorer lag still growing in the step's second half, {self.lag_slope:+,.0f}/s "
                f"({self.lag_slope / self.achieved:.0%} of the accepted rate)"
            )
        censored = self.unread_after_settle / max(1, self.load["accepted"]) > 0.01
        if censored or (self.gap_ms and pct(self.gap_ms, 0.99) > args.max_gap_p99 * 1000):
            self.reasons.append(
                f"accept → gap p99 {self.gap_p(0.99)} (bound {args.max_gap_p99:g} s)"
            )

    @property
    def broken(self) -> bool:
        return bool(self.reasons)


def seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.1f} s"


def mb(value: int) -> str:
    return f"{value / 1e6:,.0f} MB"


# --- the run ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        suffix = uuid.uuid4().hex[:8]
        bootstrap = kafka_bootstrap()
        self.raw = KafkaSettings(
            kafka_bootstrap=bootstrap,
            topic_prefix=f"benchraw{suffix}.",
            kafka_partitions=args.partitions,
        )
        self.live = KafkaSettings(
            kafka_bootstrap=bootstrap,
            topic_prefix=f"benche2e{suffix}.",
            kafka_partitions=args.partitions,
        )
        self.schema = f"bench_e2e_{suffix}"
        self.dsn = database_url()
        self.work = Path(tempfile.mkdtemp(prefix="gapwatch-bench-e2e-"))
        self.sampler = ProcessSampler()
        # Per simulator sequence number: when its 202 came back, and in which step.
        self.accepted_at = array("d")
        self.step_of = array("h")
        self.matched = 0  # entries of Observer.direct already assigned to steps
        self.gap_ms: dict[int, list[float]] = {}

    async def baselines(self) -> tuple[float, float]:
        await ensure_topics(self.raw, INPUT_STREAMS)
        docs = simulated(20_000, datetime.now(UTC))
        payloads = [orjson.dumps(d) for d in docs]
        produced, _ = await raw_producer_rate(self.raw, payloads, self.args.baseline_seconds)
        reader = consumer(self.raw)
        await reader.start()
        try:
            parts = [
                TopicPartition(topic_name(s, self.raw.topic_prefix), p)
                for s in INPUT_STREAMS
                for p in range(self.raw.kafka_partitions)
            ]
            expected = sum((await reader.end_offsets(parts)).values())
        finally:
            await reader.stop()
        consumed = await raw_consume_rate(self.raw, expected)
        return produced, consumed

    def note_accepted(self, index: int, load: dict[str, Any]) -> None:
        ids, at = load["ids"], load["accepted_at"]
        if not ids:
            return
        grow = max(ids) + 1 - len(self.accepted_at)
        if grow > 0:
            self.accepted_at.extend(array("d", [math.nan]) * grow)
            self.step_of.extend(array("h", [-1]) * grow)
        for n, t in zip(ids, at, strict=True):
            self.accepted_at[n] = t
            self.step_of[n] = index

    def match_gaps(self, observer: Observer) -> None:
        direct = observer.direct
        for n, ms in direct[self.matched :]:
            if n < len(self.step_of) and self.step_of[n] >= 0:
                self.gap_ms.setdefault(self.step_of[n], []).append(ms - self.accepted_at[n] * 1000)
        self.matched = len(direct)

    async def run(self) -> None:
        args = self.args
        print(
            f"broker {self.live.kafka_bootstrap}, {args.partitions} partitions, "
            f"{args.workers} scorer worker(s); steps {','.join(f'{s:g}' for s in args.steps)} "
            f"events/s x {args.step_seconds:g} s; batches of {args.batch}, {args.concurrency} "
            f"requests in flight; simulator team-slip at ~{args.speed:g}x; rules {RULES.name} "
            f"(receivers -> bench webhook), policies deploy/demo/{POLICIES.name}; "
            f"{os.cpu_count()} CPUs; work dir {self.work}"
        )
        print(
            f"a step breaks when: ingest accepts < 90 % of the target, HTTP p99 > "
            f"{args.max_http_p99:g} ms, the scorer's lag still grows in the step's second half "
            f"by > 5 % of the accepted rate, or accept → gap p99 > {args.max_gap_p99:g} s"
        )
        produced, consumed = await self.baselines()
        print(f"raw aiokafka producer (idempotent, acks=all, send per event): {produced:9,.0f} /s")
        print(f"raw aiokafka consume (getmany + json + dict):                 {consumed:9,.0f} /s")

        hook = Hook()
        await hook.start()
        services: list[Service] = []
        steps: list[Step] = []
        observer: Observer | None = None
        driver: multiprocessing.process.BaseProcess | None = None
        conn: Any = None
        try:
            await ensure_topics(self.live)
            services = await asyncio.to_thread(
                start_services, self.live, self.dsn, self.schema, self.work, args.workers, hook.url
            )
            ingest, scorers, alerter = services[0], services[1:-1], services[-1]
            ctx = multiprocessing.get_context("spawn")
            conn, child_conn = ctx.Pipe()
            driver = ctx.Process(
                target=_drive,
                args=(child_conn, ingest.url, args.speed, args.batch, args.concurrency),
            )
            driver.start()
            if await asyncio.to_thread(conn.recv) != "ready":
                raise SystemExit("the driver did not start")
            self.sampler.watch("ingest", ingest.process.pid)
            self.sampler.watch("scorer", *(s.process.pid for s in scorers))
            self.sampler.watch("alerter", alerter.process.pid)
            for name, pidfile in (
                ("kafka", REPO / ".run" / "kafka" / "kafka.pid"),
                ("postgres", REPO / ".run" / "postgres" / "data" / "postmaster.pid"),
            ):
                if pidfile.exists():
                    self.sampler.watch(name, int(pidfile.read_text().split()[0]))
            assert driver.pid is not None
            # The services are this process's children: count the bench's two processes alone.
            self.sampler.watch("bench", os.getpid(), driver.pid, tree=False)
            observer = Observer(self.live, [s.url for s in scorers], alerter.url, self.sampler)
            await observer.start()
            for index, target in enumerate(args.steps):
                step = await self.step(index, target, conn, observer, services)
                steps.append(step)
                self.print_step(step)
                if step.broken and not args.keep_going:
                    break
        finally:
            if driver is not None:
                conn.send(None)
                await asyncio.to_thread(driver.join, 30)
                if driver.is_alive():
                    driver.kill()
            if observer is not None:
                await observer.stop()
            for service in reversed(services):
                await asyncio.to_thread(stop_process, service.process)
            await hook.stop()
            await cleanup([self.raw, self.live], self.dsn, [self.schema])
            for state in self.work.glob("scorer-state-*"):
                shutil.rmtree(state, ignore_errors=True)
        if observer is not None:
            self.summary(steps, produced, consumed)

    async def step(
        self,
        index: int,
        target: float,
        conn: Any,
        observer: Observer,
        services: list[Service],
    ) -> Step:
        args = self.args
        team = TICKET_TEAMS[index % len(TICKET_TEAMS)]
        before = await observer.counters()
        view_before = await observer.view_lag_buckets()
        conn.send((target, args.step_seconds, team))
        load = await asyncio.to_thread(conn.recv)
        after = await observer.counters()
        for service in services:
            if service.process.poll() is not None:
                raise SystemExit(f"{service.name} exited mid-step; see {service.log}")
        self.note_accepted(index, load)
        # Settle: let the scorer drain and the gap events of this step's events arrive.
        settle_start = time.monotonic()
        lag = after["lag"]
        while time.monotonic() - settle_start < args.settle_seconds:
            gaps_end = await observer.end(Stream.GAPS)
            lag = await observer.lag()
            if lag <= max(1000, target) and observer.gaps_read >= gaps_end:
                break
            await asyncio.sleep(1)
        self.match_gaps(observer)
        # After settling: the records of the step's last seconds count in its view lag too.
        view_after = await observer.view_lag_buckets()
        during = [(t, n) for t, n in observer.lags if before["at"] <= t <= after["at"]]
        middle = (before["at"] + after["at"]) / 2
        mid_lag = min(during, key=lambda s: abs(s[0] - middle))[1] if during else after["lag"]
        late = [(t, n) for t, n in during if t >= middle]
        slope = 0.0
        if len(late) >= 3:
            times, lags = [t for t, _ in late], [float(n) for _, n in late]
            slope = statistics.linear_regression(times, lags).slope
        alerts = []
        # Every firing transition seen since the previous step was judged (one for this step's
        # slip may come later, during the next step: its labels say which team it is).
        fired, observer.firing = observer.firing, []
        for ms, data in fired:
            named = [observer.breached_at.get(i.encode()) for i in data["latest_breached"]]
            newest = max((n for n in named if n is not None), default=None)
            alerts.append((data, None if newest is None else (ms - newest) / 1000))
        step = Step(
            index=index,
            target=target,
            team=team,
            load=load,
            before=before,
            after=after,
            usage=self.sampler.window(before["at"], after["at"]),
            mid_lag=int(mid_lag),
            max_lag=max([int(after["lag"]), *(n for _, n in during)]),
            lag_slope=slope,
            unread_after_settle=int(lag) if lag > max(1000, target) else 0,
            settle_seconds=time.monotonic() - settle_start,
            gap_ms=sorted(self.gap_ms.pop(index, [])),
            alerts=alerts,
            view_lag_before=view_before,
            view_lag_after=view_after,
        )
        step.judge(args)
        return step

    def print_step(self, step: Step) -> None:
        load = step.load
        errors = {k: v for k, v in load["statuses"].items() if k != 202}
        print(
            f"\nstep {step.index + 1}: target {step.target:,.0f} events/s for "
            f"{load['seconds']:.0f} s (team {step.team} slips; event time ran "
            f"{load['speed']:.0f}x the wall clock)"
        )
        backlog = load["offered"] - load["sent"]
        print(
            f"  ingest    offered {step.offered:8,.0f}/s  accepted {step.achieved:8,.0f}/s "
            f"({step.achieved / step.target:.0%})  HTTP p50 {step.http_p(0.5):,.0f} ms, p99 "
            f"{step.http_p(0.99):,.0f} ms, {len(load['http_ms']):,} requests"
            + (f", non-202 {errors}" if errors else "")
            + (f", {backlog:,} generated but not sent" if backlog else "")
        )
        print(
            f"  scorer    consumed {step.consumed:7,.0f}/s  gap events {step.gaps:8,.0f}/s  "
            f"lag {step.before['lag']:,.0f} -> {step.mid_lag:,} -> {step.after['lag']:,.0f} "
            f"(start, middle, end; max {step.max_lag:,}; {round(step.lag_slope):+,}/s over the "
            f"second half), "
            f"dead letters {step.after['dead'] - step.before['dead']:,.0f}"
        )
        unread = (
            f"; {step.unread_after_settle:,} input events still unread after "
            f"{step.settle_seconds:.0f} s of settling"
            if step.unread_after_settle
            else ""
        )
        print(
            f"  latency   HTTP 202 -> gap event p50 {step.gap_p(0.5)}, p99 {step.gap_p(0.99)} "
            f"({len(step.gap_ms):,} samples){unread}"
        )
        print(
            f"  view      promise states, scorer append -> alerter view commit: p50 "
            f"{step.view_lag(0.5)}, p99 {step.view_lag(0.99)}"
        )
        if not step.alerts:
            print("  alerts    none fired")
        for data, latency in step.alerts:
            labels = ",".join(f"{k}={v}" for k, v in data["labels"].items())
            took = "newest named breach not seen" if latency is None else seconds(latency)
            print(
                f"  alert     {data['rule']} ({labels}) {data['from_state']} -> firing "
                f"{data['severity']}: breach -> alert {took}"
            )
        order = ("ingest", "scorer", "alerter", "kafka", "postgres", "bench")
        print(
            "  cpu, rss  "
            + "  ".join(
                f"{name} {step.usage[name][0]:.0f}% {mb(step.usage[name][1])}"
                for name in order
                if name in step.usage
            )
        )
        verdict = "BROKE: " + "; ".join(step.reasons) if step.broken else "held"
        print(f"  verdict   {verdict}")

    def summary(self, steps: list[Step], produced: float, consumed: float) -> None:
        print("\nsummary")
        print(
            f"  {'target/s':>9} {'accepted/s':>10} {'consumed/s':>10} {'gaps/s':>8} "
            f"{'lag end':>8} {'HTTP p99':>9} {'gap p50':>9} {'gap p99':>9} {'view p99':>10} "
            f"{'ingest':>6} {'scorer':>6} {'alerter':>7}  verdict"
        )
        for s in steps:
            cpu = {name: f"{s.usage[name][0]:.0f}%" for name in s.usage}
            print(
                f"  {s.target:9,.0f} {s.achieved:10,.0f} {s.consumed:10,.0f} {s.gaps:8,.0f} "
                f"{s.after['lag']:8,.0f} {s.http_p(0.99):7,.0f}ms {s.gap_p(0.5):>9} "
                f"{s.gap_p(0.99):>9} {s.view_lag(0.99):>10} {cpu.get('ingest', '-'):>6} "
                f"{cpu.get('scorer', '-'):>6} "
                f"{cpu.get('alerter', '-'):>7}  {'BROKE' if s.broken else 'held'}"
            )
        alert_latency = sorted(
            latency for s in steps for _, latency in s.alerts if latency is not None
        )
        if alert_latency:
            print(
                f"  breach -> alert (all steps): p50 {seconds(statistics.median(alert_latency))}, "
                f"p99 {seconds(pct(alert_latency, 0.99))} ({len(alert_latency)} alerts)"
            )
        else:
            print("  breach -> alert: no alert fired with a breach this run saw")
        held = [s for s in steps if not s.broken]
        broke = next((s for s in steps if s.broken), None)
        if held:
            best = max(held, key=lambda s: s.target)
            sustained = best.achieved
            print(
                f"  sustained end to end: {sustained:,.0f} events/s (step {best.index + 1}, "
                f"target {best.target:,.0f}/s, {self.args.workers} scorer worker(s), "
                f"{self.args.partitions} partitions)"
            )
        else:
            sustained = 0.0
            print("  sustained end to end: none of the steps held")
        if broke is not None:
            print(f"  first broken step: {broke.target:,.0f}/s: {'; '.join(broke.reasons)}")
        else:
            print("  no step broke: raise --steps to find the limit")
        print(
            f"  vs raw on the same broker: produce {produced:,.0f}/s (ratio "
            f"{sustained / produced:.3f}), consume {consumed:,.0f}/s (ratio "
            f"{sustained / consumed:.3f})"
        )
        goal = "met" if sustained >= GOAL else "NOT met"
        print(
            f"  goal {GOAL:,.0f} events/s end to end on this {os.cpu_count()}-CPU machine: {goal} "
            f"({sustained / GOAL:.1%} of it)"
        )
        print(f"  logs: {self.work}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=lambda text: [float(s) for s in text.split(",")],
        default=[250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0],
        help="target events/s, comma-separated",
    )
    parser.add_argument("--step-seconds", type=float, default=60.0, help="duration of each step")
    parser.add_argument(
        "--settle-seconds", type=float, default=20.0, help="most wait for the lag after a step"
    )
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--workers", type=int, default=1, help="scorer worker processes")
    parser.add_argument("--batch", type=int, default=500, help="events per POST")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--speed", type=float, default=240.0, help="event time / wall time")
    parser.add_argument("--max-http-p99", type=float, default=1000.0, help="ms")
    parser.add_argument("--max-gap-p99", type=float, default=10.0, help="s, accept → gap event")
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    parser.add_argument("--keep-going", action="store_true", help="run every step")
    args = parser.parse_args()
    asyncio.run(Bench(args).run())


if __name__ == "__main__":
    main()

"""Alerter benchmark: rule evaluation in-process, then snapshot → receiver latency on real infra.

Prints, in one run:
  1. evaluation (in-process, no I/O): `Evaluator.evaluate` of --rules varied rules (burn rate,
     divergence, overdue, CSAT) over a FiguresBook of --segments segments (team x region x
     priority; first_response windows 5m/30m/1h/6h and open counts): the first call (which
     builds each rule's segment selection) and warm calls, as rule x segment evaluations/s,
     against the goal "1,000 rules x 1,000 segments within one snapshot interval" (the
     scorer's default, 10 s). Twice: rules sharing a few selectors (the evaluator sums each
     selector's window once per call) and rules each with a distinct `match`. Then the
     engine's step around it (`advance` over the verdicts, routing, gauges) with PostgreSQL
     and Kafka stubbed out, and the cost of taking snapshot records into the book;
  2. raw baselines on the same broker and database: an aiokafka produce → consume round trip
     of one small record (acks=all, like the snapshots) and an asyncpg single-row INSERT
     commit, p50/p99 (and an HTTP POST to the bench's receiver);
  3. latency (live): a real alerter process on fresh topics and a fresh PostgreSQL schema
     (dropped afterwards), one burn-rate rule with `for: 0s`, `hold: 0s`, and a webhook
     receiver served by this script. --iterations times, a crossing snapshot for a fresh team
     (one new alert each), timed from before its send to the receipt of its firing
     notification: p50/p99/max against "p99 under 1 s", quiet and while --load-segments
     segments are republished every second by a separate process; ratios to the raw figures.
     --live-rules N puts N of the generated rules beside it (their transitions go to Kafka
     only), to see what the rule count does to the latency.

    .venv/bin/python -m bench.alerter [--rules 1000] [--segments 1000] [--iterations 30]
        [--load-segments 1000] [--live-rules 0] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import math
import multiprocessing
import os
import pstats
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import yaml
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from bench.common import REPO, delete_topics, kafka_bootstrap
from gapwatch.core.alerts.evaluation import Evaluator, FiguresBook
from gapwatch.core.alerts.lifecycle import Alert, advance
from gapwatch.core.alerts.rules import (
    AlertsConfig,
    BurnRateCondition,
    CsatCondition,
    DivergenceCondition,
    OverdueCondition,
)
from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.clients import consumer, reliable_producer
from gapwatch.kafka.settings import KafkaSettings
from gapwatch.kafka.topics import ensure_topics
from gapwatch_alerter.engine import Engine
from gapwatch_alerter.metrics import AlerterMetrics
from gapwatch_alerter.settings import AlerterSettings

WINDOWS = ("5m", "30m", "1h", "6h")
WINDOW_SECONDS = {"5m": 300, "30m": 1800, "1h": 3600, "6h": 21600}
REGIONS = ("emea", "amer", "apac", "latam", "anz")
PRIORITIES = ("p1", "p2", "p3", "p4")
PROMISED_P90 = {"p1": 900.0, "p2": 3600.0, "p3": 14400.0, "p4": 28800.0}
SNAPSHOT_SECONDS = 10.0  # the scorer's default GAPWATCH_SCORER_SNAPSHOT_SECONDS
STALE_SECONDS = 60.0  # the alerter's default GAPWATCH_ALERTER_STALE_SECONDS
HOOK_SECRET = "bench-webhook-secret"
LATENCY_RULE = "bench-latency-burn"

Segment = dict[str, str]


def database_url() -> str:
    if "GAPWATCH_DATABASE_URL" in os.environ:
        return os.environ["GAPWATCH_DATABASE_URL"]
    env = REPO / ".run" / "infra.env"
    for line in env.read_text().splitlines() if env.exists() else ():
        key, _, value = line.partition("=")
        if key.strip() == "GAPWATCH_DATABASE_URL":
            return value.strip().strip('"')
    raise SystemExit("GAPWATCH_DATABASE_URL missing: run `make infra` first")


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted `values` (with 30 samples, p99 is the maximum)."""
    return values[min(len(values) - 1, int(len(values) * q))]


# --- 1. evaluation, in-process ----------------------------------------------------------------


def make_segments(count: int) -> list[Segment]:
    teams = [f"team-{t:03d}" for t in range(math.ceil(count / 20))]
    product = itertools.product(teams, REGIONS, PRIORITIES)
    return [{"team": t, "region": r, "priority": p} for t, r, p in itertools.islice(product, count)]


def window_record(
    segment: Segment, window: str, met: int, breached: int, as_of: str, **figures: Any
) -> dict[str, Any]:
    """A window record shaped like the scorer's on gapwatch.scores.v1."""
    total = met + breached
    return {
        "kind": "window",
        "segment": segment,
        "promise_kind": "first_response",
        "window": window,
        "window_seconds": WINDOW_SECONDS[window],
        "as_of": as_of,
        "met": met,
        "breached": breached,
        "delivered_late": figures.get("delivered_late", 0),
        "at_risk": 0,
        "cancelled": 0,
        "attainment": met / total if total else None,
        "gap_p50": None,
        "gap_p90": figures.get("gap_p90"),
        "gap_p99": None,
        "promised_p50": None,
        "promised_p90": figures.get("promised_p90"),
        "delivered_p50": None,
        "delivered_p90": figures.get("delivered_p90"),
        "csat_mean": figures.get("csat_mean"),
        "csat_count": figures.get("csat_count", 0),
        "nps": None,
        "nps_count": 0,
        "csat_by_gap_bucket": {},
        "ftf_rate": None,
        "ftf_count": 0,
        "latest_breached": figures.get("latest_breached", []),
    }


def snapshot(segments: list[Segment], partitions: int, now: datetime, seed: int) -> list[bytes]:
    """One scorer round: four windows and `partitions` open records per segment, encoded.

    Three teams slip on every segment and 2 % of other segments slip too, so some groups of
    every rule fire and most do not.
    """
    rng = random.Random(seed)
    as_of = (now - timedelta(seconds=3)).isoformat()
    slipping_teams = {segments[i]["team"] for i in range(0, min(len(segments), 60), 20)}
    records = []
    for n, seg in enumerate(segments):
        slipping = seg["team"] in slipping_teams or rng.random() < 0.02
        promised = PROMISED_P90[seg["priority"]]
        for window in WINDOWS:
            total = rng.randint(1, 4) * WINDOW_SECONDS[window] // 300
            breached = round(total * (rng.uniform(0.3, 0.8) if slipping else rng.uniform(0, 0.03)))
            delivered = promised * (rng.uniform(1.5, 3.0) if slipping else rng.uniform(0.4, 1.1))
            record = window_record(
                seg,
                window,
                total - breached,
                breached,
                as_of,
                delivered_late=breached // 2,
                gap_p90=max(0.0, delivered - promised) or None,
                promised_p90=promised,
                delivered_p90=delivered,
                csat_mean=rng.uniform(2.5, 3.5) if slipping else rng.uniform(3.6, 4.8),
                csat_count=rng.randint(0, total // 3 + 1),
                latest_breached=[f"T-{n}-{i}" for i in range(min(breached, 3))],
            )
            records.append(orjson.dumps(record))
        for part in range(partitions):
            open_record = {
                "kind": "open",
                "segment": seg,
                "promise_kind": "first_response",
                "source_partition": part,
                "open": rng.randint(0, 20),
                "at_risk": rng.randint(0, 3),
                "overdue": rng.randint(2, 10) if slipping else rng.randint(0, 1),
                "as_of": as_of,
            }
            records.append(orjson.dumps(open_record))
    return records


def selectors(teams: list[str], distinct: bool) -> list[tuple[dict[str, str], list[str]]]:
    """(match, group_by) per rule: a few shared ones, or one distinct `match` per rule."""
    if not distinct:
        matches: list[dict[str, str]] = [{}, {"priority": "p1"}, {"region": "emea"}]
        group_bys = [["team"], ["team", "region"], ["region"]]
        return [(m, g) for g in group_bys for m in matches]
    out: list[tuple[dict[str, str], list[str]]] = [({"team": t}, ["region"]) for t in teams]
    out += [({"team": t, "region": r}, ["priority"]) for t in teams for r in REGIONS]
    out += [({"team": t, "priority": p}, ["region"]) for t in teams for p in PRIORITIES]
    out += [
        ({"team": t, "region": r, "priority": p}, [])
        for t in teams
        for r in REGIONS
        for p in PRIORITIES
    ]
    return out


def condition(i: int) -> tuple[str, dict[str, Any]]:
    """Half burn-rate rules, then divergence, overdue and CSAT, with varied thresholds."""
    kind = i % 10
    j = i // 10
    if kind < 5:
        windows: list[dict[str, Any]] | None = None
        if kind == 4:
            windows = [{"long": "30m", "short": "5m", "factor": 10, "severity": "ticket"}]
        doc: dict[str, Any] = {
            "type": "burn_rate",
            "objective": (0.95, 0.97, 0.98, 0.99, 0.995)[(j + kind) % 5],
            "min_events": (10, 20, 50)[j % 3],
        }
        if windows:
            doc["windows"] = windows
        return "burn", doc
    if kind < 7:
        return "divergence", {
            "type": "divergence",
            "window": ("1h", "6h")[j % 2],
            "max_ratio": (1.2, 1.5, 2.0)[j % 3],
            **({"max_gap_p90": "30m"} if j % 2 else {}),
            "min_events": 10,
        }
    if kind < 9:
        return "overdue", {"type": "overdue", "above": (0, 5, 10, 25)[j % 4]}
    return "csat", {"type": "csat", "window": "6h", "floor": (3.0, 3.5, 4.0)[j % 3]}


def rule_docs(count: int, teams: list[str], distinct: bool) -> list[dict[str, Any]]:
    chosen = selectors(teams, distinct)
    rules = []
    for i in range(count):
        match, group_by = chosen[i % len(chosen)]
        kind, cond = condition(i)
        rules.append(
            {
                "name": f"r{i:05d}-{kind}",
                "summary": f"bench rule {i}",
                "promise_kinds": [] if kind == "overdue" else ["first_response"],
                "match": match,
                "group_by": group_by,
                "condition": cond,
                "severity": ("page", "ticket")[i % 2],
                "for": ("0s", "2m", "5m")[i % 3],
                "hold": ("5m", "10m")[i % 2],
                "no_data": ("keep", "ok")[i % 2],
            }
        )
    return rules


def make_config(count: int, teams: list[str], distinct: bool) -> AlertsConfig:
    hook = {"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/", "secret_env": "X"}
    return AlertsConfig.model_validate(
        {
            "version": "bench",
            "rules": rule_docs(count, teams, distinct),
            "receivers": [hook],
            "routes": [
                {"receivers": ["hook"], "severities": ["page"], "continue": True},
                {"receivers": ["hook"], "match": {"region": "emea"}},
            ],
            "default_receivers": ["hook"],
        }
    )


def aggregations(config: AlertsConfig) -> tuple[int, int, int]:
    """(distinct window sums, window reads, open sums): what one evaluate() call computes."""
    keys = set()
    reads = opens = 0
    for rule in config.rules:
        c = rule.condition
        if isinstance(c, BurnRateCondition):
            windows = {w for pair in c.windows for w in (pair.long, pair.short)}
        elif isinstance(c, DivergenceCondition | CsatCondition):
            windows = {c.window}
        else:
            assert isinstance(c, OverdueCondition)
            opens += 1  # the overdue sum is not memoised: one pass over the open records each
            continue
        for window in windows:
            reads += 1
            keys.add((rule.promise_kinds, window, tuple(sorted(rule.match.items())), rule.group_by))
    return len(keys), reads, opens


class _NoStore:
    """The engine's store with nothing behind it: the step is measured without PostgreSQL."""

    async def active_silences(self, now: datetime) -> list[Any]:
        return []

    async def commit(self, *args: Any) -> None:
        return None


class _NoProducer:
    async def flush(self) -> None:
        return None


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def evaluation(
    config: AlertsConfig, book: FiguresBook, now: datetime, repeats: int
) -> dict[str, Any]:
    evaluator = Evaluator(config, stale_after=STALE_SECONDS)
    first, verdicts = timed(lambda: evaluator.evaluate(book, now))
    warm = sorted(timed(lambda: evaluator.evaluate(book, now))[0] for _ in range(repeats))
    # The engine's pure work on top: every verdict advanced as a new alert would be.
    rules = {r.name: r for r in config.rules}

    def advance_all() -> int:
        moved = 0
        for (name, group), verdict in verdicts.items():
            rule = rules[name]
            alert = Alert.new(name, dict(zip(rule.group_by, group, strict=True)))
            moved += len(advance(alert, verdict, now, rule)[1])
        return moved

    advance_seconds, transitions = timed(advance_all)
    return {
        "first": first,
        "warm": statistics.median(warm),
        "verdicts": len(verdicts),
        "firing": sum(1 for v in verdicts.values() if v.firing),
        "advance": advance_seconds,
        "transitions": transitions,
    }


def engine_step(config: AlertsConfig, book: FiguresBook, now: datetime) -> tuple[float, float]:
    """Engine.evaluate with the store and producer stubbed: the first step (new alerts for
    every firing group) and a steady step (those alerts advanced again, nothing committed)."""
    settings = AlerterSettings(
        kafka_bootstrap="127.0.0.1:9", topic_prefix="bench.", alerter_stale_seconds=STALE_SECONDS
    )
    metrics = AlerterMetrics(CollectorRegistry())
    engine = Engine(settings, config, _NoStore(), _NoProducer(), metrics)  # type: ignore[arg-type]
    engine.book = book

    async def steps() -> tuple[float, float]:
        started = time.perf_counter()
        await engine.evaluate(now)
        first = time.perf_counter() - started
        steady = []
        for k in range(3):
            started = time.perf_counter()
            await engine.evaluate(now + timedelta(seconds=k + 1))
            steady.append(time.perf_counter() - started)
        return first, statistics.median(steady)

    return asyncio.run(steps())


def profile_evaluation(config: AlertsConfig, book: FiguresBook, now: datetime) -> str:
    evaluator = Evaluator(config, stale_after=STALE_SECONDS)
    evaluator.evaluate(book, now)
    profiler = cProfile.Profile()
    profiler.enable()
    evaluator.evaluate(book, now)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(8)
    return out.getvalue()


# --- 2. raw baselines -------------------------------------------------------------------------


async def raw_kafka_round_trip(settings: KafkaSettings, samples: int) -> list[float]:
    """ms from send to the record's arrival at a consumer, one small record at a time."""
    topic = topic_name(Stream.SCORES, settings.topic_prefix)
    producer = reliable_producer(settings)
    reader = consumer(settings, enable_auto_commit=False)
    await producer.start()
    await reader.start()
    tp = TopicPartition(topic, 0)
    reader.assign([tp])
    await reader.seek_to_end(tp)
    out = []
    try:
        for n in range(samples + 10):
            started = time.perf_counter()
            ack = await producer.send(topic, b'{"n": %d}' % n, key=b"raw", partition=0)
            await reader.getone()
            elapsed = time.perf_counter() - started
            await ack
            if n >= 10:  # the first few include connection set-up
                out.append(elapsed * 1000)
    finally:
        await reader.stop()
        await producer.stop()
    return sorted(out)


async def raw_insert_commit(dsn: str, schema: str, samples: int) -> list[float]:
    """ms per single-row INSERT in its own (implicit) transaction, on a fresh schema."""
    conn = await asyncpg.connect(dsn)
    out = []
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(
            f"CREATE TABLE {schema}.rows (id bigint PRIMARY KEY, at timestamptz, body jsonb)"
        )
        body = orjson.dumps({"rule": LATENCY_RULE, "labels": {"team": "x"}, "to": "firing"})
        for n in range(samples + 10):
            started = time.perf_counter()
            await conn.execute(
                f"INSERT INTO {schema}.rows VALUES ($1, now(), $2::jsonb)", n, body.decode()
            )
            if n >= 10:
                out.append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()
    return sorted(out)


async def raw_http_post(url: str, samples: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(timeout=10) as http:
        for n in range(samples + 5):
            started = time.perf_counter()
            response = await http.post(url, content=b'{"raw": true}')
            response.raise_for_status()
            if n >= 5:
                out.append((time.perf_counter() - started) * 1000)
    return sorted(out)


# --- 3. latency, live -------------------------------------------------------------------------


class Hook:
    """The webhook receiver: notes when each team's firing notification arrives (wall clock)."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[tuple[float, str]]] = {}
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                body = await reader.readexactly(int(length[1]) if length else 0)
                arrived = time.time()
                self.requests += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
                transition = orjson.loads(body).get("transition")
                if transition and transition["to_state"] == "firing":
                    waiter = self.waiting.pop(transition["labels"].get("team", ""), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result((arrived, transition["at"]))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_rules(path: Path, hook_url: str, extra: int, teams: list[str]) -> None:
    """The latency rule, routed to the webhook; `extra` shared-selector rules beside it, whose
    transitions go to Kafka only."""
    rule = {
        "name": LATENCY_RULE,
        "summary": "first responses breaking the SLO (bench)",
        "promise_kinds": ["first_response"],
        "group_by": ["team"],
        "condition": {"type": "burn_rate", "objective": 0.95, "min_events": 10},
        "for": "0s",
        "hold": "0s",
    }
    hook = {"name": "hook", "type": "webhook", "url": hook_url, "secret_env": "BENCH_HOOK_SECRET"}
    doc = {
        "version": "bench",
        "rules": [rule, *rule_docs(extra, teams, distinct=False)],
        "receivers": [hook],
        "routes": [{"receivers": ["hook"], "rules": [LATENCY_RULE]}],
    }
    path.write_text(yaml.safe_dump(doc))


def start_alerter(
    settings: KafkaSettings, dsn: str, schema: str, rules: Path, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "GAPWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "GAPWATCH_TOPIC_PREFIX": settings.topic_prefix,
        "GAPWATCH_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "GAPWATCH_DATABASE_URL": dsn,
        "GAPWATCH_ALERTER_DB_SCHEMA": schema,
        "GAPWATCH_ALERTER_RULES_FILE": str(rules),
        "GAPWATCH_ALERTER_PORT": str(port),
        "GAPWATCH_ALERTER_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "GAPWATCH_ALERTER_TOKENS": "bench-token",
        "BENCH_HOOK_SECRET": HOOK_SECRET,
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gapwatch_alerter"], env=env, stdout=out, stderr=out, cwd=REPO
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"alerter exited with {proc.returncode}; see {log}")
        try:
            body = httpx.get(url + "/readyz", timeout=2).json()
            if body.get("leader") and body.get("status") == "ready":
                return proc, url
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"alerter not ready within 60 s; see {log}")


def alerter_metrics(url: str) -> dict[str, float]:
    """The alerter's own counters that explain a latency: evaluations, commits, the outbox."""
    text = httpx.get(url + "/metrics", timeout=5).text
    found = {}
    for name in (
        "gapwatch_alerter_evaluations_total",
        "gapwatch_alerter_evaluation_seconds_sum",
        "gapwatch_alerter_snapshot_to_commit_seconds_sum",
        "gapwatch_alerter_snapshot_to_commit_seconds_count",
        "gapwatch_alerter_transitions_total",
    ):
        values = re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        found[name] = sum(float(v) for v in values)
    for receiver in ("kafka", "hook"):
        depth = re.search(
            rf'^gapwatch_alerter_outbox_depth{{receiver="{receiver}"}} (\S+)$', text, re.M
        )
        found[f"outbox_{receiver}"] = float(depth[1]) if depth else 0.0
    return found


def _load(settings: KafkaSettings, segments: int, stop: Any, out: Any) -> None:
    """A separate process: republish `segments` healthy segments' four windows every second."""

    async def run() -> tuple[int, float]:
        topic = topic_name(Stream.SCORES, settings.topic_prefix)
        docs = [
            window_record(seg, window, 100, 0, "")
            for seg in make_segments(segments)
            for window in WINDOWS
        ]
        for doc in docs:  # apart from the teams the latency rounds create
            doc["segment"] = {**doc["segment"], "team": "load-" + doc["segment"]["team"]}
        keys = ["|".join(f"{k}={v}" for k, v in sorted(d["segment"].items())) for d in docs]
        producer = reliable_producer(settings)
        await producer.start()
        sent = 0
        started = time.monotonic()
        try:
            while not stop.is_set():
                tick = time.monotonic()
                as_of = datetime.now(UTC).isoformat()
                acks = []
                for doc, key in zip(docs, keys, strict=True):
                    doc["as_of"] = as_of
                    acks.append(await producer.send(topic, orjson.dumps(doc), key=key.encode()))
                await asyncio.gather(*acks)
                sent += len(acks)
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        finally:
            await producer.stop()
        return sent, time.monotonic() - started

    out.put(asyncio.run(run()))


@dataclass
class Latencies:
    """One phase: ms from send to receipt and to the transition's evaluation time, sorted."""

    total: list[float] = field(default_factory=list)
    to_evaluation: list[float] = field(default_factory=list)
    issued: int = 0
    late: int = 0  # arrived after the round had moved on (counted in `total`)
    lost: int = 0  # never arrived, even after the grace period


async def latency_round(
    settings: KafkaSettings, hook: Hook, iterations: int, tag: str, timeout: float = 10.0
) -> Latencies:
    """Crossings one at a time; a notification slower than `timeout` is still awaited (and
    counted) at the end, and three such in a row end the round early."""
    topic = topic_name(Stream.SCORES, settings.topic_prefix)
    producer = reliable_producer(settings)
    await producer.start()
    rng = random.Random(7)
    out = Latencies()
    overdue: list[tuple[float, asyncio.Future[tuple[float, str]]]] = []

    def note(sent: float, arrived: float, at: str) -> None:
        out.total.append((arrived - sent) * 1000)
        evaluated = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
        out.to_evaluation.append((evaluated - sent) * 1000)

    try:
        for i in range(iterations):
            if len(overdue) >= 3 and all(not w.done() for _, w in overdue[-3:]):
                break
            team = f"lat-{tag}-{i}"
            segment = {"team": team, "region": "emea", "priority": "p2"}
            key = f"priority=p2|region=emea|team={team}".encode()
            waiter = asyncio.get_running_loop().create_future()
            hook.waiting[team] = waiter
            sent = time.time()
            as_of = datetime.fromtimestamp(sent, UTC).isoformat()
            acks = [
                await producer.send(
                    topic,
                    orjson.dumps(
                        window_record(segment, w, 20, 80, as_of, latest_breached=[f"T-{team}"])
                    ),
                    key=key,
                )
                for w in WINDOWS
            ]
            out.issued += 1
            await asyncio.gather(*acks)
            done, _ = await asyncio.wait({waiter}, timeout=timeout)
            if not done:
                overdue.append((sent, waiter))
                continue
            note(sent, *waiter.result())
            await asyncio.sleep(0.1 + 0.3 * rng.random())  # no phase lock with the 1 s timers
        if overdue:
            await asyncio.wait({w for _, w in overdue}, timeout=30)
        for sent, waiter in overdue:
            if waiter.done():
                out.late += 1
                note(sent, *waiter.result())
            else:
                out.lost += 1
                waiter.cancel()
    finally:
        await producer.stop()
    out.total.sort()
    out.to_evaluation.sort()
    return out


def live(
    settings: KafkaSettings, dsn: str, schema: str, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    results: dict[str, Any] = {}

    async def serve_and_measure() -> None:
        hook = Hook()
        await hook.start()
        rules = work / "alerts.yaml"
        teams = sorted({s["team"] for s in make_segments(args.load_segments)})
        write_rules(rules, hook.url, args.live_rules, teams)
        results["http"] = await raw_http_post(hook.url, 100)
        proc, url = await asyncio.to_thread(
            start_alerter, settings, dsn, schema, rules, work / "alerter.log"
        )
        try:
            before = await asyncio.to_thread(alerter_metrics, url)
            results["quiet"] = await latency_round(settings, hook, args.iterations, "q")
            await asyncio.sleep(1.5)  # the outbox gauge is refreshed about once a second
            after = await asyncio.to_thread(alerter_metrics, url)
            results["quiet_metrics"] = (before, after)
            if args.load_segments:
                ctx = multiprocessing.get_context("spawn")
                stop, out = ctx.Event(), ctx.Queue()
                loader = ctx.Process(target=_load, args=(settings, args.load_segments, stop, out))
                loader.start()
                try:
                    await asyncio.sleep(5)  # the load's segments are in the book, rounds settle
                    before = await asyncio.to_thread(alerter_metrics, url)
                    results["loaded"] = await latency_round(settings, hook, args.iterations, "l")
                    await asyncio.sleep(1.5)  # the outbox gauge is refreshed about once a second
                    after = await asyncio.to_thread(alerter_metrics, url)
                    results["loaded_metrics"] = (before, after)
                finally:
                    stop.set()
                    results["load_rate"] = await asyncio.to_thread(out.get, True, 60)
                    await asyncio.to_thread(loader.join, 30)
        finally:
            await asyncio.to_thread(stop_process, proc)
            await hook.stop()

    asyncio.run(serve_and_measure())
    return results


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


async def cleanup(settings: list[KafkaSettings], dsn: str, schemas: list[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for schema in schemas:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()
    await delete_topics(settings)


# --- main -------------------------------------------------------------------------------------


def per_eval(metrics: tuple[dict[str, float], dict[str, float]]) -> str:
    before, after = metrics

    def delta(name: str) -> float:
        return after[name] - before[name]

    count = delta("gapwatch_alerter_evaluations_total")
    seconds = delta("gapwatch_alerter_evaluation_seconds_sum")
    commits = delta("gapwatch_alerter_snapshot_to_commit_seconds_count")
    commit_seconds = delta("gapwatch_alerter_snapshot_to_commit_seconds_sum")
    return (
        f"{count:.0f} evaluations, mean {seconds / max(count, 1) * 1000:.0f} ms each; "
        f"snapshot read → commit mean {commit_seconds / max(commits, 1) * 1000:.0f} ms; "
        f"{delta('gapwatch_alerter_transitions_total'):,.0f} transitions; outbox left: "
        f"{after['outbox_kafka']:,.0f} kafka, {after['outbox_hook']:,.0f} webhook"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=1_000, help="rules evaluated in-process")
    parser.add_argument("--segments", type=int, default=1_000, help="segments in the book")
    parser.add_argument("--iterations", type=int, default=30, help="live crossings per phase")
    parser.add_argument(
        "--load-segments", type=int, default=1_000, help="republished every second; 0: no load"
    )
    parser.add_argument(
        "--live-rules", type=int, default=0, help="extra rules (shared selectors) in the live run"
    )
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="warm evaluations (median)")
    parser.add_argument("--raw-samples", type=int, default=200)
    parser.add_argument("--profile", action="store_true", help="cProfile one warm evaluation")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gapwatch-bench-"))
    rows: list[tuple[str, str, str]] = []

    # 1. evaluation
    now = datetime.now(UTC)
    segments = make_segments(args.segments)
    teams = sorted({s["team"] for s in segments})
    records = snapshot(segments, args.partitions, now, seed=11)
    book = FiguresBook()

    def fill_book() -> None:
        for record in records:
            book.update(orjson.loads(record))

    took, _ = timed(fill_book)
    print(
        f"book: {len(segments):,} segments ({len(teams)} teams x {len(REGIONS)} regions x "
        f"{len(PRIORITIES)} priorities), {len(records):,} records (first_response "
        f"{'/'.join(WINDOWS)} + open x {args.partitions} partitions); "
        f"orjson.loads + FiguresBook.update {len(records) / took:,.0f} records/s"
    )
    for distinct in (False, True):
        config = make_config(args.rules, teams, distinct)
        sums, reads, opens = aggregations(config)
        what = "distinct match per rule" if distinct else "shared selectors"
        r = evaluation(config, book, now, args.repeats)
        pairs = args.rules * len(segments)
        fits = "met" if r["warm"] <= SNAPSHOT_SECONDS else "NOT met"
        print(
            f"evaluate {args.rules:,} rules x {len(segments):,} segments, {what}: "
            f"{sums} window sums for {reads} window reads + {opens} open sums; "
            f"{r['verdicts']:,} verdicts, {r['firing']:,} firing"
        )
        print(
            f"  first call {r['first']:.3f} s (builds selections), warm {r['warm']:.3f} s: "
            f"{pairs / r['warm']:,.0f} rule x segment evaluations/s; within {SNAPSHOT_SECONDS:g} s "
            f"snapshot interval: {fits} ({r['warm'] / SNAPSHOT_SECONDS:.1%} of it)"
        )
        first_step, steady_step = engine_step(config, book, now)
        print(
            f"  advance over all {r['verdicts']:,} verdicts as new alerts {r['advance']:.3f} s "
            f"({r['transitions']:,} transitions); Engine.evaluate, store/Kafka stubbed: "
            f"first step {first_step:.3f} s, steady step {steady_step:.3f} s"
        )
        label = "distinct" if distinct else "shared"
        rows.append((f"evaluate warm, {label}", f"{r['warm']:.3f} s", f"10 s goal: {fits}"))
        rows.append((f"rule x segment evals/s, {label}", f"{pairs / r['warm'] / 1e6:.2f} M/s", ""))
        rows.append((f"engine step steady, {label}", f"{steady_step:.3f} s", ""))
        if args.profile or r["warm"] > 1.0:
            print(profile_evaluation(config, book, now))

    # 2 and 3: raw baselines, then the live alerter, on fresh topics and schemas
    dsn = database_url()
    suffix = uuid.uuid4().hex[:8]
    raw_settings = KafkaSettings(
        kafka_bootstrap=kafka_bootstrap(), topic_prefix=f"benchraw{suffix}.", kafka_partitions=1
    )
    live_settings = KafkaSettings(
        kafka_bootstrap=kafka_bootstrap(),
        topic_prefix=f"bench{suffix}.",
        kafka_partitions=args.partitions,
    )
    raw_schema, live_schema = f"bench_raw_{suffix}", f"bench_{suffix}"
    try:
        asyncio.run(ensure_topics(raw_settings, [Stream.SCORES]))
        kafka_rt = asyncio.run(raw_kafka_round_trip(raw_settings, args.raw_samples))
        pg_commit = asyncio.run(raw_insert_commit(dsn, raw_schema, args.raw_samples))
        print(
            f"raw aiokafka produce → consume (acks=all, one record): p50 {pct(kafka_rt, 0.5):.1f} "
            f"ms, p99 {pct(kafka_rt, 0.99):.1f} ms ({len(kafka_rt)} samples)"
        )
        print(
            f"raw asyncpg single-row INSERT commit:                 p50 {pct(pg_commit, 0.5):.1f}"
            f" ms, p99 {pct(pg_commit, 0.99):.1f} ms ({len(pg_commit)} samples)"
        )
        asyncio.run(ensure_topics(live_settings))
        print(
            f"live: alerter with 1 + {args.live_rules} rules, {args.partitions} partitions, "
            f"default settings (eval every 1 s at most, or when caught up); {args.iterations} "
            f"crossings quiet, then under load; logs in {work}"
        )
        results = live(live_settings, dsn, live_schema, work, args)
    finally:
        asyncio.run(cleanup([raw_settings, live_settings], dsn, [raw_schema, live_schema]))
    http = results["http"]
    print(f"raw HTTP POST to the bench's receiver (httpx): p50 {pct(http, 0.5):.1f} ms")
    base = pct(kafka_rt, 0.5) + pct(pg_commit, 0.5)
    for name, samples in (("raw kafka round trip", kafka_rt), ("raw pg INSERT commit", pg_commit)):
        rows.append((f"{name} p50/p99", f"{pct(samples, 0.5):.1f}/{pct(samples, 0.99):.1f} ms", ""))
    for phase, title in (("quiet", "quiet"), ("loaded", f"{args.load_segments:,} segments/s load")):
        if phase not in results:
            continue
        got: Latencies = results[phase]
        total = got.total
        missing = got.lost + (args.iterations - got.issued)
        if not total:
            print(f"latency snapshot → receiver, {title}: no samples ({missing} lost)")
            continue
        p50, p99 = pct(total, 0.5), pct(total, 0.99)
        goal = "met" if p99 < 1000 and not missing else "NOT met"
        print(
            f"latency snapshot → receiver, {title}: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max "
            f"{total[-1]:.0f} ms ({len(total)} samples, {got.late} over 10 s, {got.lost} never "
            f"arrived, {args.iterations - got.issued} not sent); p99 < 1 s: {goal}"
        )
        print(
            f"  of which send → evaluation time p50 {pct(got.to_evaluation, 0.5):.0f} ms; "
            f"ratio p50 / raw kafka p50 {p50 / pct(kafka_rt, 0.5):.1f}, "
            f"p50 / (raw kafka + raw pg commit) {p50 / base:.1f}; "
            f"alerter: {per_eval(results[phase + '_metrics'])}"
        )
        rows.append(
            (
                f"latency p50/p99/max, {phase}",
                f"{p50:.0f}/{p99:.0f}/{total[-1]:.0f} ms",
                f"p99 < 1 s: {goal}; p50 {p50 / base:.1f}x raw kafka+pg",
            )
        )
    if "load_rate" in results:
        sent, seconds = results["load_rate"]
        print(f"  load process sent {sent / seconds:,.0f} records/s ({sent:,} in {seconds:.0f} s)")

    print("\nsummary")
    for name, value, note in rows:
        print(f"  {name:<34} {value:>18}  {note}")


if __name__ == "__main__":
    main()

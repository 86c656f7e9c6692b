"""Fault tests' rig: a paced HTTP feed of a simulated stream, the pipeline, and checks vs replay.

The input is a `team-slip` simulator stream, generated up front from a fixed seed and posted to
the ingest API at `SPEED` times the wall clock, in the order generated, one request at a time
(so each item's events reach its partition in input order; a retried request only repeats events
already written, which the scorer drops by id). Every request is retried with the same events
until the ingest answers 202, whatever happened to the one before: the client's side of
at-least-once. The checks compare what came out with `replay` of exactly that input.

Time spent blocked on a failing ingest is not made up in a burst afterwards: the feed goes on at
`SPEED` from where it stopped. At 240x a 30 s outage is two hours of event time; pushed through
in seconds it would move the scorer's windows hours per snapshot, and the alerter (which judges
the latest snapshot, not every event-time instant) would see an incident in one sample or none.
That is a property of accelerated time, not of the faults under test, so the tests avoid it: the
feed pauses with the ingest, and the scorer is killed early enough that its catch-up is over
before the slip's breaches begin.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import TopicPartition
from aiokafka.partitioner import murmur2

from gapwatch.config import load_policies
from gapwatch.core.alerts.events import AlertEvent
from gapwatch.core.clock import ClockConfig
from gapwatch.core.examples import EXAMPLES
from gapwatch.core.scoring import ReplayResult, ScoringConfig, replay
from gapwatch.core.topics import INPUT_STREAMS, Stream, topic_name
from gapwatch.kafka.clients import consumer
from gapwatch.kafka.settings import KafkaSettings
from gapwatch.simulation import Scenario, Simulator
from tests.integration.alerter_support import (
    AlerterProcess,
    FlakyWebhook,
    eventually,
    fresh_schema,
    start_alerter,
    webhook_receiver,
    write_rules,
)
from tests.integration.conftest import (
    REPO,
    TOKEN,
    IngestProcess,
    end_offsets,
    free_port,
    read_topic,
    start_ingest,
    stop_process,
)
from tests.integration.scorer_support import ScorerProcess, flush_events, start_scorer

SPEED = 240.0
AHEAD = "172800"
"""GAPWATCH_MAX_FUTURE_SKEW_SECONDS of every service: event time runs ahead of the wall clock."""
"""Simulated seconds per wall second: an hour of event time in 15 s, as in `make demo`."""
RATE = 300.0
"""Events per wall second (0.25 items per simulated second)."""
SEED = 6
SLIPPING_TEAM = "billing"
STREAM_HOURS = 7.5
SLIP_HOURS = (1.0, 3.5)
"""Billing's first responses run 8x slower from event hour 1 to 3.5. Breaches (2 h promises)
follow from hour 3 to 5.5: the page fires near hour 3.7 and resolves near hour 6, leaving the
stream 1.5 event hours to spare, since `for`, `hold` and the windows run on event time."""

POLICIES = """
version: 1
defaults:
  calendar: 24x7
  pause_statuses: [awaiting_customer]
  replies: {authors: [agent], visibilities: [public]}
calendars: []
policies:
  - name: test-all
    match: {}
    promises:
      first_response: {within: 2h}
"""

COUNTED = ("met", "breached", "delivered_late", "at_risk", "cancelled")
KAFKA_SCRIPT = REPO / "deploy" / "local" / "kafka.sh"
POSTGRES_SCRIPT = REPO / "deploy" / "local" / "postgres.sh"


# --- the input ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    """A simulated stream plus flush events: what is posted, in order, and what replay reads."""

    start: datetime
    end: datetime
    events: list[dict[str, Any]]
    due: list[float]  # wall seconds after the feed starts at which each event is posted
    policies: Path

    @property
    def lines(self) -> list[bytes]:
        return [orjson.dumps(e) for e in self.events]

    @property
    def ids(self) -> set[str]:
        return {e["id"] for e in self.events}

    def replay(self) -> ReplayResult:
        policies = load_policies(self.policies)
        return replay(self.lines, ScoringConfig(ClockConfig.from_policies(policies)))


def team_slip_input(kafka: KafkaSettings, work: Path) -> Input:
    """The team-slip stream from now on, and flush events that bring every partition to its end.

    The stream starts at the wall clock: the alerter's windows, `for` and `hold` then run on the
    scorer's event time, which the simulation moves `SPEED` times faster.
    """
    policies = work / "policies.yaml"
    policies.write_text(POLICIES)
    start = datetime.now(UTC).replace(microsecond=0)
    end = start + timedelta(hours=STREAM_HOURS)
    scenario = Scenario.named(
        "team-slip",
        slip_team=SLIPPING_TEAM,
        slip_start_minutes=SLIP_HOURS[0] * 60,
        slip_end_minutes=SLIP_HOURS[1] * 60,
    )
    sim = Simulator(start=start, items_per_second=RATE / 5.0 / SPEED, scenario=scenario, seed=SEED)
    events = list(sim.events_until(end))
    due = [(datetime.fromisoformat(e["time"]) - start).total_seconds() / SPEED for e in events]
    flush = [orjson.loads(b) for b in flush_events(end, kafka.kafka_partitions, "faults")]
    flush += job_flush_events(end, kafka.kafka_partitions)
    last = (end - start).total_seconds() / SPEED
    return Input(start, end, events + flush, due + [last] * len(flush), policies)


def job_flush_events(at: datetime, partitions: int) -> list[dict[str, Any]]:
    """One job per partition scheduled at `at` (window hours later): the jobs stream's clock,
    like the tickets', reaches `at` on every partition, as it does in replay's single clock."""
    events = []
    wanted = set(range(partitions))
    n = 0
    while wanted:
        item = f"FLUSH-JOB-{n}"
        n += 1
        partition = (murmur2(item.encode()) & 0x7FFFFFFF) % partitions
        if partition not in wanted:
            continue
        wanted.discard(partition)
        doc = copy.deepcopy(EXAMPLES["gapwatch.job.scheduled.v1"])
        window = {
            "start": (at + timedelta(hours=6)).isoformat(),
            "end": (at + timedelta(hours=8)).isoformat(),
        }
        doc.update(id=f"flush-{item}", subject=item, time=at.isoformat())
        doc["data"].update(job_id=item, created_at=at.isoformat(), window=window)
        doc["data"].pop("promised_completion_at", None)
        events.append(doc)
    return events


# --- the feed ----------------------------------------------------------------------------------


@dataclass
class Feed:
    """Posts an `Input` to the ingest API at its pace; retries each request until a 202."""

    input: Input
    url: str
    max_batch: int = 500
    accepted: list[str] = field(default_factory=list)  # ids of events in 202 answers, in order
    requests: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # failed attempts by cause
    posted: int = 0  # events of the input posted and accepted so far
    in_flight_at_kill: list[str] | None = None  # ids of the request a kill interrupted
    stalled: float = 0.0  # wall seconds spent retrying; the schedule moves on by as much
    _interrupt: Callable[[], None] | None = None
    _began: float = 0.0

    def posted_until(self) -> datetime:
        """Event time the ingest has accepted everything before."""
        if self.posted == 0:
            return self.input.start
        return datetime.fromisoformat(self.input.events[self.posted - 1]["time"])

    async def reached(self, hours: float, timeout: float = 120) -> None:
        """Wait until the stream has been accepted up to `hours` of event time."""
        mark = self.input.start + timedelta(hours=hours)
        await eventually(lambda: self.posted_until() >= mark, timeout, f"event hour {hours}")

    def interrupt_next_request(self, action: Callable[[], None]) -> None:
        """Run `action` (say, kill -9 the ingest) while the next request is in flight."""
        self._interrupt = action

    async def run(self, timeout: float = 400) -> None:
        loop = asyncio.get_running_loop()
        self._began = loop.time()
        deadline = self._began + timeout
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            due = self.input.due
            while self.posted < len(self.input.events):
                now = loop.time()
                if now > deadline:
                    raise AssertionError(f"feed not done in {timeout:.0f}s: {self.failures}")
                until = bisect.bisect_right(due, now - self._began - self.stalled)
                while self.posted < until:
                    upto = min(until, self.posted + self.max_batch)
                    batch = self.input.events[self.posted : upto]
                    await self._post(http, batch, deadline)
                    self.posted += len(batch)
                await asyncio.sleep(max(0.0, 0.1 - (loop.time() - now)))

    async def _post(
        self, http: httpx.AsyncClient, batch: list[dict[str, Any]], deadline: float
    ) -> None:
        body = orjson.dumps(batch)
        delay = 0.2
        loop = asyncio.get_running_loop()
        first = loop.time()
        retried = False
        while True:
            self.requests += 1
            request = asyncio.create_task(http.post(self.url + "/v1/events", content=body))
            if self._interrupt is not None:
                action, self._interrupt = self._interrupt, None
                await asyncio.sleep(0.002)  # the request is on its way; its answer is not
                self.in_flight_at_kill = [e["id"] for e in batch]
                action()
            try:
                response = await request
            except httpx.TransportError as exc:
                self.failures[type(exc).__name__] += 1
            else:
                if response.status_code == 202:
                    self.accepted.extend(e["id"] for e in batch)
                    if retried:
                        self.stalled += loop.time() - first
                    return
                assert response.status_code == 503, (response.status_code, response.text)
                self.failures[f"http {response.status_code}"] += 1
            if loop.time() > deadline:
                raise AssertionError(f"ingest never accepted a request: {self.failures}")
            retried = True
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)


# --- the pipeline ------------------------------------------------------------------------------


def start_ingest_at(kafka: KafkaSettings, work: Path, port: int) -> IngestProcess:
    """The ingest service on a given port, answering fast with 503 while Kafka is away."""
    return start_ingest(
        kafka,
        work,
        port,
        GAPWATCH_INGEST_PRODUCE_TIMEOUT_SECONDS="5",
        GAPWATCH_MAX_FUTURE_SKEW_SECONDS=AHEAD,
    )


def slip_rule() -> dict[str, Any]:
    """The pipeline test's rule: pages when a team burns its first-response budget 14.4x."""
    return {
        "name": "first-response-burn",
        "promise_kinds": ["first_response"],
        "group_by": ["team"],
        "condition": {"type": "burn_rate", "objective": 0.95, "min_events": 20},
        "for": "2m",
        "hold": "10m",
    }


@dataclass
class Pipeline:
    """ingest → scorer → alerter → webhook on fresh topics and a fresh schema; kill and restart."""

    kafka: KafkaSettings
    work: Path
    input: Input
    schema: str
    rules: Path
    hook: FlakyWebhook
    ingest: IngestProcess
    scorer: ScorerProcess
    alerter: AlerterProcess
    restarts: Counter[str] = field(default_factory=Counter)

    # Scorer settings. Wall clock off: timers fire on each partition's event time only, exactly
    # as in replay, so the gap events can be compared with replay's one for one. (With the wall
    # clock on, a partition whose events stall behind a fault - a stopped broker, a scorer
    # catching up - has its timers fired from the wall clock instead, which is right live but
    # not what replay of the same input does.)
    @staticmethod
    def scorer_env(work: Path, policies: Path) -> dict[str, str]:
        return {
            "GAPWATCH_SCORER_POLICIES_FILE": str(policies),
            "GAPWATCH_SCORER_WALL_CLOCK": "false",
            "GAPWATCH_SCORER_WINDOWS_LEAD_SECONDS": "172800",
            "GAPWATCH_SCORER_DATA_DIR": str(work / "scorer-state"),
            "GAPWATCH_MAX_FUTURE_SKEW_SECONDS": AHEAD,
        }

    @staticmethod
    def alerter_env() -> dict[str, str]:
        # 1 s of wall time is 4 minutes of event time: snapshots seconds apart are not stale.
        return {"GAPWATCH_ALERTER_STALE_SECONDS": "3600", "GAPWATCH_MAX_FUTURE_SKEW_SECONDS": AHEAD}

    def kill(self, what: str) -> None:
        """kill -9 one service and reap it."""
        process = getattr(self, what).process
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)

    async def restart(self, what: str) -> None:
        """Start a killed service again, on the state (store, schema, port) the old one left."""
        self.restarts[what] += 1
        name = f"run{self.restarts[what]}"
        if what == "scorer":
            env = self.scorer_env(self.work, self.input.policies)
            self.scorer = await asyncio.to_thread(start_scorer, self.kafka, self.work, name, **env)
        elif what == "alerter":
            self.alerter = await asyncio.to_thread(
                start_alerter, self.kafka, self.work, self.schema, self.rules, **self.alerter_env()
            )
        else:
            port = int(self.ingest.url.rsplit(":", 1)[1])
            self.ingest = await asyncio.to_thread(start_ingest_at, self.kafka, self.work, port)

    def pages(self) -> list[dict[str, Any]]:
        return [
            r.body["transition"]
            for r in self.hook.accepted()
            if r.body["transition"]["to_state"] == "firing"
            and r.body["transition"]["severity"] == "page"
        ]

    def resolved(self) -> bool:
        return any(r.body["transition"]["to_state"] == "resolved" for r in self.hook.accepted())

    def logs(self) -> str:
        """Each service log's warnings and errors (all of them), then its tail."""
        parts = []
        for path in sorted(self.work.glob("*.log")):
            text = path.read_text(errors="replace")
            flagged = [line for line in text.splitlines() if _FLAGGED.search(line)]
            parts.append(f"--- {path.name}: {len(flagged)} warning or error lines")
            parts.extend(flagged[-60:])
            parts.append(f"--- {path.name}: tail\n{text[-3000:]}")
        return "\n".join(parts)


_FLAGGED = re.compile(r"WARNING|ERROR|CRITICAL|Traceback|dead letter|internal error")


@asynccontextmanager
async def pipeline(kafka: KafkaSettings, work: Path, stream: Input) -> AsyncIterator[Pipeline]:
    hook = FlakyWebhook(fail_first=2)
    await hook.start()
    rules = write_rules(
        work / "alerts.yaml",
        [slip_rule()],
        [webhook_receiver(hook.url)],
    )
    started: list[subprocess.Popen[bytes]] = []
    try:
        async with fresh_schema() as schema:
            try:
                scorer = await asyncio.to_thread(
                    start_scorer,
                    kafka,
                    work,
                    "run0",
                    **Pipeline.scorer_env(work, stream.policies),
                )
                started.append(scorer.process)
                alerter = await asyncio.to_thread(
                    start_alerter, kafka, work, schema, rules, **Pipeline.alerter_env()
                )
                started.append(alerter.process)
                ingest = await asyncio.to_thread(start_ingest_at, kafka, work, free_port())
                started.append(ingest.process)
                rig = Pipeline(kafka, work, stream, schema, rules, hook, ingest, scorer, alerter)
                try:
                    yield rig
                finally:
                    started += [rig.ingest.process, rig.scorer.process, rig.alerter.process]
            finally:
                for process in started:
                    stop_process(process)
    finally:
        await hook.stop()


# --- shared infrastructure ---------------------------------------------------------------------


def infra(script: Path, action: str, timeout: float = 180) -> None:
    """Run deploy/local/{kafka,postgres}.sh ACTION; fail with its output if it fails."""
    done = subprocess.run(
        ["bash", str(script), action], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{script.name} {action}: {done.stdout}{done.stderr}"


def infra_ready() -> None:
    """Start the broker and PostgreSQL if they are down (a no-op when up) and wait until ready."""
    infra(KAFKA_SCRIPT, "start")
    infra(POSTGRES_SCRIPT, "start")
    infra(KAFKA_SCRIPT, "status", timeout=30)
    infra(POSTGRES_SCRIPT, "status", timeout=30)


# --- checks ------------------------------------------------------------------------------------


@dataclass
class Figures:
    """What a run did, for the test's report (printed with -s, shown on failure)."""

    values: dict[str, Any] = field(default_factory=dict)

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = value

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items())


async def check_input_in_kafka(kafka: KafkaSettings, feed: Feed, figures: Figures) -> None:
    """Every event of every 202 is in the input topics; nothing else is."""
    records = []
    for stream in INPUT_STREAMS:
        total = await end_offsets(kafka, (stream,))
        records += await read_topic(kafka, stream, total, timeout=120)
    ids = Counter(orjson.loads(r.value)["id"] for r in records)
    sent = feed.input.ids
    missing = set(feed.accepted) - set(ids)
    assert not missing, f"{len(missing)} accepted events not in Kafka, e.g. {sorted(missing)[:5]}"
    assert set(ids) <= sent, sorted(set(ids) - sent)[:5]
    assert set(feed.accepted) == sent, "the feed retried until every event was accepted"
    figures["events_sent"] = len(sent)
    figures["input_records"] = len(records)
    figures["input_duplicates"] = len(records) - len(ids)
    figures["requests"] = feed.requests
    figures["failed_attempts"] = dict(feed.failures)
    figures["feed_stalled_s"] = round(feed.stalled, 1)


async def check_gap_events(
    kafka: KafkaSettings, want: ReplayResult, figures: Figures, timeout: float = 180
) -> None:
    """The gap events equal replay's by id and content; repeats only under the same id."""
    replayed = {e.id: e.model_dump(mode="json", exclude_none=True) for e in want.gap_events}
    deadline = time.monotonic() + timeout
    while True:
        total = await end_offsets(kafka, (Stream.GAPS,))
        records = await read_topic(kafka, Stream.GAPS, total, timeout=60)
        live: dict[str, Any] = {}
        changed: list[str] = []
        for record in records:
            doc = orjson.loads(record.value)
            if doc["id"] in live and live[doc["id"]] != doc:
                changed.append(doc["id"])
            live[doc["id"]] = doc
        assert not changed, f"{len(changed)} gap event ids seen with different content"
        if set(replayed) <= set(live) or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    assert set(live) == set(replayed), differences(live, replayed)
    unequal = [i for i in replayed if live[i] != replayed[i]]
    assert not unequal, differences({i: live[i] for i in unequal}, replayed)
    figures["gap_events"] = len(replayed)
    figures["gap_records"] = len(records)
    figures["gap_duplicates_same_id"] = len(records) - len(live)


async def dead_letters(kafka: KafkaSettings) -> list[str]:
    """Reason and detail of each dead letter written so far."""
    total = await end_offsets(kafka, (Stream.DEADLETTER,))
    records = await read_topic(kafka, Stream.DEADLETTER, total, timeout=60)
    briefs = []
    for record in records:
        doc = orjson.loads(record.value)
        briefs.append(
            f"{doc['reason']} ({doc['topic']}[{doc['partition']}]@{doc['offset']}):"
            f" {doc['detail'][:300]}"
        )
    return briefs


def items_in(failure: str) -> list[str]:
    """The item ids a `differences` text names."""
    return re.findall(r"^item (\S+):$", failure, re.MULTILINE)[:10]


async def saved_history(kafka: KafkaSettings, items: list[str]) -> str:
    """Where these items' input events sit, and each save of them in the scorer's changelog.

    For a failure message: it tells whether a lost outcome's item was saved without it, or
    never saved, or saved and then not read back, and which input offsets that concerns."""
    if not items:
        return ""
    keyed = {item.encode(): item for item in items}
    inputs = [topic_name(stream, kafka.topic_prefix) for stream in INPUT_STREAMS]
    lines = ["input records:"]
    for record in await _all_records(kafka, inputs):
        if record.key in keyed:
            where = f"{record.topic}[{record.partition}]@{record.offset}"
            lines.append(f"  {keyed[record.key]} {where} {orjson.loads(record.value).get('id')}")
    lines.append("changelog saves:")
    changelog = f"{kafka.topic_prefix}gapwatch-scorer-items-changelog"
    saved = {orjson.dumps(item): item for item in items}
    for record in await _all_records(kafka, [changelog]):
        if record.key in saved:
            ids = [entry[0] for entry in orjson.loads(record.value)["log"]]
            lines.append(f"  {saved[record.key]} @{record.partition}:{record.offset} {ids}")
    return "\n".join(lines)


async def _all_records(kafka: KafkaSettings, topics: list[str]) -> list[Any]:
    """Every record now in these topics (for failure messages: bounded by 60 s)."""
    reader = consumer(kafka, *topics, auto_offset_reset="earliest", enable_auto_commit=False)
    await reader.start()
    records: list[Any] = []
    try:
        parts = [TopicPartition(t, p) for t in topics for p in range(kafka.kafka_partitions)]
        ends = await reader.end_offsets(parts)
        seen = dict.fromkeys(parts, 0)
        deadline = time.monotonic() + 60
        while any(seen[tp] < ends[tp] for tp in parts) and time.monotonic() < deadline:
            for tp, batch in (await reader.getmany(timeout_ms=1000)).items():
                records.extend(batch)
                seen[TopicPartition(tp.topic, tp.partition)] = batch[-1].offset + 1
    finally:
        await reader.stop()
    return records


async def check_no_dead_letters(kafka: KafkaSettings, figures: Figures) -> None:
    """Every input event is valid and on time: a dead letter means a fault cost an event."""
    letters = await dead_letters(kafka)
    figures["dead_letters"] = len(letters)
    assert not letters, f"{len(letters)} dead letters:\n" + "\n".join(letters[:10])


def differences(live: dict[str, Any], replayed: dict[str, Any]) -> str:
    """Missing and extra gap events, item by item, for a failure message."""
    unequal = {i for i in live if i in replayed and live[i] != replayed[i]}
    odd = (set(live) ^ set(replayed)) | unequal
    items = {(live.get(i) or replayed[i])["data"]["item_id"] for i in odd}

    def brief(doc: dict[str, Any]) -> str:
        d = doc["data"]
        return (
            f"{doc['id'][:8]} {d['outcome']} {d['promise_kind']} at {d['outcome_at']}"
            f" cause={d.get('caused_by')} corrects={d.get('corrects')}"
        )

    extra = [live[i] for i in set(live) - set(replayed)]
    kinds = Counter((d["data"]["outcome"], "corrects" in d["data"]) for d in extra)
    out = [
        f"{len(set(replayed) - set(live))} missing, {len(extra)} extra {dict(kinds)},"
        f" {len(unequal)} different"
    ]
    for item in sorted(items)[:20]:
        out.append(f"item {item}:")
        out += ["  replay " + brief(d) for d in replayed.values() if d["data"]["item_id"] == item]
        out += ["  live   " + brief(d) for d in live.values() if d["data"]["item_id"] == item]
    return "\n".join(out)


def replay_windows(want: ReplayResult) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """Replay's 7-day counts per (segment, promise kind) at its final watermark."""
    assert want.scoring.watermark is not None
    snapshot = want.scoring.snapshot(want.scoring.watermark)
    return {
        (tuple(sorted(w.segment.items())), w.promise_kind.value, w.window): tuple(
            w.as_dict()[name] for name in COUNTED
        )
        for w in snapshot.windows
        if w.promise_kind is not None and w.window == "7d"
    }


async def recent_windows(
    kafka: KafkaSettings, seconds: float = 15
) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """The newest 7-day counts per key among the scores published in the last `seconds`."""
    topic = topic_name(Stream.SCORES, kafka.topic_prefix)
    reader = consumer(kafka, enable_auto_commit=False)
    await reader.start()
    latest: dict[tuple[Any, ...], tuple[int, ...]] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(kafka.kafka_partitions)]
        reader.assign(tps)
        ends = await reader.end_offsets(tps)
        since = int((time.time() - seconds) * 1000)
        found = await reader.offsets_for_times(dict.fromkeys(tps, since))
        for tp in tps:
            hit = found.get(tp)
            reader.seek(tp, hit.offset if hit is not None else ends[tp])
        deadline = time.monotonic() + 60
        while [tp for tp in tps if await reader.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, "scores topic not read within 60 s"
            for records in (await reader.getmany(timeout_ms=1000)).values():
                for record in records:
                    doc = orjson.loads(record.value)
                    if doc.get("kind") == "window" and doc["window"] == "7d":
                        key = (tuple(sorted(doc["segment"].items())), doc["promise_kind"], "7d")
                        latest[key] = tuple(doc[name] for name in COUNTED)
    finally:
        await reader.stop()
    return latest


async def check_windows(
    kafka: KafkaSettings, want: ReplayResult, figures: Figures, timeout: float = 90
) -> None:
    """The 7-day window counts on the scores topic equal replay's."""
    expected = replay_windows(want)
    deadline = time.monotonic() + timeout
    while True:
        live = await recent_windows(kafka)
        if live == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    wrong = {k: (live.get(k), v) for k, v in expected.items() if live.get(k) != v}
    extra = set(live) - set(expected)
    assert not wrong and not extra, f"(live, replay) per window: {wrong}; extra keys {extra}"
    figures["windows_7d"] = len(expected)


async def check_alerts(rig: Pipeline, figures: Figures) -> None:
    """One page for the slipping team, then its resolve; no other team alerts; every transition
    once on the alerts topic, in PostgreSQL, and at the dedup-keyed webhook."""
    total = await end_offsets(rig.kafka, (Stream.ALERTS,))
    records = await read_topic(rig.kafka, Stream.ALERTS, total, timeout=30)
    events: dict[str, AlertEvent] = {}
    for record in records:
        event = AlertEvent.model_validate_json(record.value)
        if event.id in events:
            assert events[event.id] == event, f"transition {event.id}: two contents on Kafka"
        events[event.id] = event
    by_alert: dict[str, list[AlertEvent]] = {}
    for event in events.values():
        by_alert.setdefault(event.subject, []).append(event)
    teams = {e[0].data.labels["team"] for e in by_alert.values()}
    assert teams == {SLIPPING_TEAM}, f"only the slipping team alerts: {teams}"
    [(fingerprint, transitions)] = by_alert.items()
    transitions.sort(key=lambda e: e.data.sequence)
    assert [e.data.sequence for e in transitions] == list(range(1, len(transitions) + 1))
    states = [e.data.to_state.value for e in transitions]
    # The input makes this inevitable: pending (a slip that clears inside `for` may go back to
    # inactive first), then one firing page, then one resolve.
    assert states[-3:] == ["pending", "firing", "resolved"], states
    assert states[:-3] == ["pending", "inactive"] * (len(states[:-3]) // 2), states
    assert transitions[-2].data.severity.value == "page"

    detail = httpx.get(
        f"{rig.alerter.url}/v1/alerts/{fingerprint}", params={"history": 500}, timeout=10
    ).json()
    stored = {h["id"]: h for h in detail["history"]}
    assert set(stored) == set(events), "PostgreSQL holds exactly the transitions on Kafka"
    for tid, h in stored.items():
        t = events[tid].data
        assert (h["sequence"], h["from_state"], h["to_state"], h["severity"]) == (
            t.sequence,
            t.from_state.value,
            t.to_state.value,
            t.severity.value,
        ), tid
        assert datetime.fromisoformat(h["at"]) == t.at, tid

    notified = {i for i, h in stored.items() if h["to_state"] in ("firing", "resolved")}
    bodies: dict[str, dict[str, Any]] = {}
    for r in rig.hook.accepted():
        t = r.body["transition"]
        assert r.delivery == t["id"]
        if r.delivery in bodies:
            assert bodies[r.delivery] == t, f"transition {r.delivery}: two contents delivered"
        bodies[r.delivery] = t
    assert set(bodies) == notified, (sorted(bodies), sorted(notified))
    for tid, t in bodies.items():
        assert {k: stored[tid][k] for k in t} == t, f"delivered {tid} differs from PostgreSQL's"
    assert all(r.signed for r in rig.hook.requests)
    figures["alert_transitions"] = states
    figures["webhook_requests"] = len(rig.hook.requests)
    figures["webhook_accepted"] = len(rig.hook.accepted())
    figures["webhook_repeats_same_id"] = len(rig.hook.accepted()) - len(bodies)


async def check_everything(rig: Pipeline, feed: Feed, figures: Figures) -> None:
    """After recovery: input, gap events, windows, alert history - all against replay."""
    want = rig.input.replay()
    assert want.rejected == [], want.rejected[:3]
    await eventually(rig.resolved, 120, "the resolve of the page")
    await check_input_in_kafka(rig.kafka, feed, figures)
    try:
        await check_gap_events(rig.kafka, want, figures)
    except AssertionError as exc:
        letters = await dead_letters(rig.kafka)
        history = await saved_history(rig.kafka, items_in(str(exc)))
        raise AssertionError(f"{exc}\ndead letters: {letters[:10]}\n{history}") from None
    await check_no_dead_letters(rig.kafka, figures)
    await check_windows(rig.kafka, want, figures)
    await check_alerts(rig, figures)

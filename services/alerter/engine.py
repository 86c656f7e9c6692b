"""The evaluation loop: scores in from Kafka, rules judged, transitions and outbox rows stored.

One process evaluates at a time (a PostgreSQL advisory lock elects it); others serve the API
and deliver from the outbox. Everything an evaluation decides — alert states, transitions, the
deliveries they owe and the Kafka offsets read so far — is committed in one transaction, so a
crash either keeps all of it or none: after a restart the same snapshots are read again and, as
transition ids derive from (fingerprint, sequence), re-deciding yields the same ids.

The scores topic is read with manual assignment of every partition (not a consumer group):
an alert group (say a team) spans segments on different partitions, so one evaluator must see
them all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from gapwatch.core.alerts.evaluation import (
    Evaluator,
    FigureError,
    FiguresBook,
    GroupKey,
    record_as_of,
)
from gapwatch.core.alerts.lifecycle import Alert, AlertState, Transition, advance, transition_id
from gapwatch.core.alerts.rounds import Rounds
from gapwatch.core.alerts.rules import AlertsConfig, Rule, Severity
from gapwatch.core.timebound import FROM_THE_FUTURE
from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.clients import consumer, topic_partitions
from gapwatch.kafka.deadletter import DeadLetter, dead_letter
from gapwatch_alerter.metrics import AlerterMetrics
from gapwatch_alerter.promise_store import PromiseStore
from gapwatch_alerter.settings import AlerterSettings
from gapwatch_alerter.store import AlertStore, StoreUnavailable

log = logging.getLogger(__name__)


class SnapshotFromTheFuture(FigureError):
    """A snapshot whose `as_of` lies beyond the time bound (`gapwatch.core.timebound`)."""

    def __init__(self, as_of: float, limit: float) -> None:
        super().__init__(
            f"as_of {datetime.fromtimestamp(as_of, UTC).isoformat()} is after "
            f"{datetime.fromtimestamp(limit, UTC).isoformat()}, the latest accepted "
            "(the wall clock plus GAPWATCH_MAX_FUTURE_SKEW_SECONDS)"
        )


KAFKA_RECEIVER = "kafka"
"""The outbox's name for publishing a transition on gapwatch.alerts.v1."""
EVIDENCE_REFRESH_SECONDS = 15.0
"""How stale the stored figures of an alert whose state did not change may get."""
CATCH_UP_SPEED = 2.0
SILENT_PARTITION_SECONDS = 5.0
"""While catching up, a partition not yet read to its end that delivered nothing for this long
stops holding the rounds back."""
"""Behind the live edge, event time is judged at least this many times faster than it passes."""


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A snapshot record waiting in `Rounds`, with what its dead letter would need."""

    record: dict[str, Any]
    tp: TopicPartition
    offset: int
    key: bytes | None
    value: bytes | None


class Engine:
    """Reads snapshots, evaluates, commits. `run()` until cancelled."""

    def __init__(
        self,
        settings: AlerterSettings,
        config: AlertsConfig,
        store: AlertStore,
        producer: AIOKafkaProducer,
        metrics: AlerterMetrics,
    ) -> None:
        self.settings = settings
        self.config = config
        self.store = store
        self.producer = producer
        self.metrics = metrics
        self.rules: dict[str, Rule] = {r.name: r for r in config.rules}
        self.evaluator = Evaluator(config, stale_after=settings.alerter_stale_seconds)
        self.book = FiguresBook()
        self.alerts: dict[str, Alert] = {}
        self.by_group: dict[tuple[str, GroupKey], str] = {}
        self.topic = topic_name(Stream.SCORES, settings.topic_prefix)
        self.deadletter_topic = topic_name(Stream.DEADLETTER, settings.topic_prefix)
        self.positions: dict[int, int] = {}  # next offset to read, per partition
        self.committed: dict[int, int] = {}
        # Firing alerts whose page a silence held back: paged when it ends, never resolved to
        # receivers that never heard of them.
        self.muted: set[str] = set()
        self.stored_at: dict[str, float] = {}  # monotonic time each alert was last stored
        self.leading = False
        self.last_evaluation = 0.0
        self.evaluation_cost = 0.0  # seconds the last evaluation took, judging and committing
        self.evaluated_until = datetime.fromtimestamp(0, UTC)  # the latest `now` judged at
        self.received_at: float | None = None  # monotonic time the oldest unevaluated record came
        self.evaluated = asyncio.Event()  # set after each committed evaluation (tests wait on it)
        # The promises view, which pages name their items from (set by the app once connected).
        self.promises: PromiseStore | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Wait to lead, then evaluate until cancelled; step down when PostgreSQL goes away."""
        while True:
            try:
                if not await self.store.try_lead():
                    await asyncio.sleep(2.0)
                    continue
            except StoreUnavailable as exc:
                log.warning("PostgreSQL unavailable (%s); retrying", exc)
                self.metrics.store_errors.inc()
                await asyncio.sleep(1.0)
                continue
            self.metrics.leader.set(1)
            log.info("leading: this alerter evaluates the rules")
            try:
                await self._lead()
            except StoreUnavailable as exc:
                log.warning("PostgreSQL unavailable (%s); stepping down and retrying", exc)
                self.metrics.store_errors.inc()
                await asyncio.sleep(1.0)
            except KafkaError as exc:
                log.warning("Kafka error (%s); stepping down and retrying", exc)
                await asyncio.sleep(1.0)
            finally:
                self.leading = False
                self.metrics.leader.set(0)
                await self.store.release_lead()

    async def _lead(self) -> None:
        # Figures are read again from the committed offsets: a book kept from an earlier term
        # would hold newer figures than the rounds re-read, and ignore them.
        self.book = FiguresBook()
        self.alerts = await self.store.load_alerts()
        self.by_group = {
            (a.rule, tuple(a.labels[label] for label in self.rules[a.rule].group_by)): fp
            for fp, a in self.alerts.items()
            if a.rule in self.rules and set(self.rules[a.rule].group_by) == set(a.labels)
        }
        self.committed = await self.store.load_offsets(self.topic)
        self.muted = set()
        for fp, alert in self.alerts.items():
            if alert.state is AlertState.FIRING:
                history = await self.store.history(fp, limit=1)
                if history and history[0][1]:
                    self.muted.add(fp)
        reader = consumer(
            self.settings,
            enable_auto_commit=False,
            client_id="gapwatch-alerter",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await reader.start()
        try:
            await self._assign(reader)
            self.leading = True  # ready: from here on every new snapshot record is read
            # Resuming from committed offsets, what was published meanwhile is judged round by
            # round (see `Rounds`) until caught up. A first start reads a short lookback: that is
            # judged once, as it stands, rather than paging for incidents that ended before
            # anyone watched.
            rounds = self._rounds() if self.committed else None
            heard = dict.fromkeys(self.positions, time.monotonic())  # last records, per partition
            while self.store.leading:
                batch = await reader.getmany(timeout_ms=200, max_records=20_000)
                dead: list[DeadLetter] = []
                for tp, records in batch.items():
                    for record in records:
                        letter = self._take(record.value, tp, record.offset, record.key, rounds)
                        if letter is not None:
                            dead.append(letter)
                        self.positions[tp.partition] = record.offset + 1
                    heard[tp.partition] = time.monotonic()
                if batch and self.received_at is None:
                    self.received_at = time.monotonic()
                behind = self._behind(reader)
                if rounds is not None:
                    # Rounds wait for slower partitions only while those deliver: one silent for
                    # a while has nothing coming soon (no leader, say) and must not stop evaluation.
                    silent = time.monotonic() - SILENT_PARTITION_SECONDS
                    waiting_for = {p for p in behind if heard.get(p, 0.0) > silent}
                    await self._judge_rounds(reader, rounds, waiting_for, dead)
                    if not behind and not len(rounds):
                        # Caught up: from here on each fetch is judged as it comes. Live, judging
                        # the newest figures soonest matters more than judging every round: an
                        # alerter that cannot keep up would fall further behind (bench-alerter).
                        rounds = None
                    behind = waiting_for
                for letter in dead:
                    await self._send_dead_letter(letter)
                if rounds is not None and behind:
                    continue  # rounds are judged at their own time; the wall clock would skip them
                due = time.monotonic() - self.last_evaluation >= self.settings.alerter_eval_seconds
                if due or (batch and not behind):
                    await self.evaluate(self.clock(), self._resume_offsets(rounds))
        finally:
            await reader.stop()

    async def _assign(self, reader: AIOKafkaConsumer) -> None:
        tps = await topic_partitions(reader, self.topic)
        reader.assign(tps)
        since = int((time.time() - self.settings.alerter_start_lookback_seconds) * 1000)
        found = await reader.offsets_for_times(
            {tp: since for tp in tps if tp.partition not in self.committed}
        )
        for tp in tps:
            if tp.partition in self.committed:
                reader.seek(tp, self.committed[tp.partition])
            elif (hit := found.get(tp)) is not None:
                reader.seek(tp, hit.offset)
            else:
                await reader.seek_to_end(tp)
            self.positions[tp.partition] = await reader.position(tp)
        log.info("reading %s from %s", self.topic, self.positions)

    def _behind(self, reader: AIOKafkaConsumer) -> set[int]:
        """Partitions not yet read to their high watermark (unknown counts as not yet)."""
        return {
            tp.partition
            for tp in reader.assignment()
            if (high := reader.highwater(tp)) is None or self.positions.get(tp.partition, 0) < high
        }

    def _rounds(self) -> Rounds[_Waiting]:
        # Pausing partitions more than two staleness spans ahead keeps what waits bounded while
        # every round still sees every partition's figures that count at its time.
        return Rounds(step=self.settings.alerter_eval_seconds, ahead=2 * self.evaluator.stale_after)

    async def _judge_rounds(
        self,
        reader: AIOKafkaConsumer,
        rounds: Rounds[_Waiting],
        behind: set[int],
        dead: list[DeadLetter],
    ) -> None:
        """Apply and judge every round all partitions have read past. With nothing behind, the
        newest round is applied but left for the caller to judge at the wall clock, as live."""
        # A round costs one evaluation. Rounds closer together than twice what an evaluation
        # takes are judged together, so catching up always runs at least twice as fast as the
        # snapshots come, however many rules and segments there are.
        rounds.step = max(self.settings.alerter_eval_seconds, CATCH_UP_SPEED * self.evaluation_cost)
        for step in rounds.take(behind):
            for waiting in step.records:
                letter = self._apply(waiting)
                if letter is not None:
                    dead.append(letter)
            if step.last and not behind:
                break  # caught up: judged at the wall clock like any live round
            for letter in dead:
                await self._send_dead_letter(letter)
            dead.clear()
            await self.evaluate(self._floor(step.as_of), self._resume_offsets(rounds))
        paused = rounds.to_pause(behind, (tp.partition for tp in reader.assignment()))
        reader.pause(*(tp for tp in reader.assignment() if tp.partition in paused))
        reader.resume(*(tp for tp in reader.assignment() if tp.partition not in paused))

    def _resume_offsets(self, rounds: Rounds[_Waiting] | None) -> dict[int, int]:
        """Where a restart must read from: past what was applied, before what still waits."""
        if rounds is None or not len(rounds):
            return dict(self.positions)
        return {**self.positions, **rounds.unapplied()}

    def _take(
        self,
        value: bytes | None,
        tp: TopicPartition,
        offset: int,
        key: bytes | None,
        rounds: Rounds[_Waiting] | None,
    ) -> DeadLetter | None:
        """Put one record in the book, or in `rounds` to wait for its turn; a record that is not
        figures comes back as a dead letter."""
        try:
            record = orjson.loads(value or b"")
            if not isinstance(record, dict):
                raise FigureError("record: expected a JSON object")
            as_of = record_as_of(record)
            limit = self.settings.not_after().timestamp()
            if as_of > limit:
                # Evaluation time never runs backwards (`clock`): one snapshot from the far
                # future would hold every alert's clock there for the life of the process.
                raise SnapshotFromTheFuture(as_of, limit)
            if rounds is not None:
                rounds.add(tp.partition, offset, as_of, _Waiting(record, tp, offset, key, value))
                return None
            self.book.update(record)
            self.metrics.records.labels("ok").inc()
            return None
        except (orjson.JSONDecodeError, FigureError) as exc:
            return self._dead_letter(exc, tp, offset, key, value)

    async def _send_dead_letter(self, letter: DeadLetter) -> None:
        await self.producer.send(
            self.deadletter_topic, letter.value, key=letter.key, headers=letter.headers
        )

    def _apply(self, waiting: _Waiting) -> DeadLetter | None:
        """Put a record that waited for its round in the book (or return its dead letter)."""
        try:
            self.book.update(waiting.record)
        except FigureError as exc:
            return self._dead_letter(exc, waiting.tp, waiting.offset, waiting.key, waiting.value)
        self.metrics.records.labels("ok").inc()
        return None

    def _dead_letter(
        self,
        exc: Exception,
        tp: TopicPartition,
        offset: int,
        key: bytes | None,
        value: bytes | None,
    ) -> DeadLetter:
        self.metrics.records.labels("dead_letter").inc()
        reason = (
            "not_json"
            if isinstance(exc, orjson.JSONDecodeError)
            else FROM_THE_FUTURE
            if isinstance(exc, SnapshotFromTheFuture)
            else "bad_figures"
        )
        log.warning("dead-lettering %s[%d]@%d: %s", tp.topic, tp.partition, offset, exc)
        return dead_letter(
            reason,
            str(exc),
            service="alerter",
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            key=key,
            value=value,
        )

    # --- one evaluation ---------------------------------------------------------------------

    def clock(self) -> datetime:
        """Evaluation time: the wall clock, or the scorer's event time when it runs ahead.

        In live operation the two agree; a replay or an accelerated simulation publishes
        snapshots as of event time, and `for`, `hold` and staleness then follow that time.
        """
        latest = self.book.latest_as_of
        now = datetime.now(UTC)
        return self._floor(max(now.timestamp(), latest))

    async def _name_items(self, t: Transition, now: datetime) -> Transition:
        """A page (firing or resolved) with the promises behind it, from the promises view."""
        if self.promises is None or not t.notifies or not self.settings.alerter_page_items:
            return t
        rule = self.rules.get(t.rule)
        kinds = [k.value for k in rule.promise_kinds] if rule is not None else []
        items = await self.promises.behind_page(
            t.labels, kinds, self.settings.alerter_page_items, max(now, datetime.now(UTC))
        )
        return replace(t, items=items)

    def _floor(self, at: float) -> datetime:
        """`at`, or the last evaluation's time if that was later: within a process, time never
        runs backwards for the alerts (a round read late is judged at the latest time so far).

        Not carried over from the stored alerts' `evaluated_at`: a schema an accelerated run
        left days ahead would otherwise hold a live alerter's clock there, every figure stale."""
        return max(datetime.fromtimestamp(at, UTC), self.evaluated_until)

    async def evaluate(
        self, now: datetime, offsets: Mapping[int, int] | None = None
    ) -> list[Transition]:
        """Judge every rule at `now` and commit what changed with `offsets` (by default, all
        read so far) as where to resume; returns the new transitions."""
        positions = dict(self.positions if offsets is None else offsets)
        started = time.monotonic()
        await self.producer.flush()  # dead letters of this batch are on the broker first
        # Judging thousands of rules is CPU work: a worker thread keeps the event loop (outbox
        # deliveries, the API) responsive meanwhile. Nothing else touches the book or the alerts
        # while it runs: this coroutine is their only writer and it waits here.
        changed, refreshed, transitions = await asyncio.to_thread(self._judge, now)
        transitions = [await self._name_items(t, now) for t in transitions]
        for alert in refreshed:  # newer evidence, same state: kept in memory, stored later
            self.alerts[alert.fingerprint] = alert
        evaluated = time.monotonic()
        if changed or positions != self.committed or self.muted:
            # Silences are an operator's word about notifications sent now: a catch-up round
            # judged at its past time is still silenced by what is in force on the wall clock.
            silenced_at = max(now, datetime.now(UTC))
            silences = await self.store.active_silences(silenced_at)
            deliveries: list[tuple[str, str]] = []
            silenced: list[str] = []
            muted = set(self.muted)
            for t in transitions:
                deliveries.append((t.id, KAFKA_RECEIVER))
                if not t.notifies:
                    continue
                if t.to_state is AlertState.RESOLVED and t.fingerprint in muted:
                    # Its page was never sent: nobody needs to hear that it ended.
                    silenced.append(t.id)
                    muted.discard(t.fingerprint)
                    continue
                if t.to_state is AlertState.FIRING:
                    if any(s.matches(t.rule, t.labels, silenced_at) for s in silences):
                        silenced.append(t.id)
                        muted.add(t.fingerprint)
                        continue
                    muted.discard(t.fingerprint)
                # A resolve of an announced page goes out even while silenced: incidents close.
                deliveries.extend((t.id, r) for r in self._receivers(t.rule, t.severity, t.labels))
            for fp in list(muted):
                alert = next((a for a in changed if a.fingerprint == fp), None) or self.alerts[fp]
                if alert.state is not AlertState.FIRING:
                    muted.discard(fp)
                elif not any(s.matches(alert.rule, alert.labels, silenced_at) for s in silences):
                    # The silence ended and the alert still fires: send the page it held back.
                    latest = transition_id(fp, alert.sequence)
                    receivers = self._receivers(alert.rule, alert.severity, alert.labels)
                    deliveries.extend((latest, r) for r in receivers)
                    muted.discard(fp)
            stored = {(self.topic, p): o for p, o in positions.items()}
            await self.store.commit(changed, transitions, deliveries, stored, silenced)
            self.committed = positions
            self.muted = muted
            stored_at = time.monotonic()
            for alert in changed:
                self.alerts[alert.fingerprint] = alert
                self.stored_at[alert.fingerprint] = stored_at
                rule = self.rules[alert.rule]
                key = (alert.rule, tuple(alert.labels[label] for label in rule.group_by))
                self.by_group[key] = alert.fingerprint
        for t in transitions:
            self.metrics.transitions.labels(t.rule, t.to_state.value).inc()
            log.info("%s %s → %s: %s", t.fingerprint[:12], t.from_state, t.to_state, t.summary)
        self._export_gauges()
        finished = time.monotonic()
        self.metrics.evaluation_seconds.observe(evaluated - started)
        self.metrics.evaluations.inc()
        if self.received_at is not None:
            self.metrics.snapshot_to_commit_seconds.observe(finished - self.received_at)
            self.received_at = None
        self.last_evaluation = finished
        self.evaluation_cost = finished - started
        self.evaluated_until = max(self.evaluated_until, now)
        self.evaluated.set()
        self.evaluated = asyncio.Event()
        return transitions

    def _judge(self, now: datetime) -> tuple[list[Alert], list[Alert], list[Transition]]:
        """Every rule's verdicts at `now`: alerts to store, alerts to refresh, transitions.

        A firing alert's figures change with every snapshot; storing them each time would
        rewrite every firing alert every second. Evidence alone is stored at most every
        `EVIDENCE_REFRESH_SECONDS` (and with every transition); the state, always at once.
        """
        refreshed: list[Alert] = []
        clock = time.monotonic()
        known: dict[str, list[GroupKey]] = {}
        for rule_name, group in self.by_group:
            known.setdefault(rule_name, []).append(group)
        verdicts = self.evaluator.evaluate(self.book, now, known, quiet=True)
        changed: list[Alert] = []
        transitions: list[Transition] = []
        for (rule_name, group), verdict in verdicts.items():
            fp = self.by_group.get((rule_name, group))
            rule = self.rules[rule_name]
            if fp is None:
                if not verdict.firing:
                    continue  # nothing to remember about a group that never alerted
                alert = Alert.new(rule_name, dict(zip(rule.group_by, group, strict=True)))
            else:
                alert = self.alerts[fp]
            after, moved = advance(alert, verdict, now, rule)
            if moved or _state_differs(alert, after):
                changed.append(after)
                transitions.extend(moved)
            elif _evidence_differs(alert, after):
                stored = self.stored_at.get(after.fingerprint, 0.0)
                if clock - stored >= EVIDENCE_REFRESH_SECONDS:
                    changed.append(after)
                else:
                    refreshed.append(after)
        return changed, refreshed, transitions

    def _receivers(
        self, rule: str, severity: Severity, labels: Mapping[str, str]
    ) -> tuple[str, ...]:
        return self.config.receivers_for(rule, severity, labels)

    def _export_gauges(self) -> None:
        counts: dict[tuple[str, str, str], int] = {}
        for alert in self.alerts.values():
            key = (alert.state.value, alert.rule, alert.severity.value)
            counts[key] = counts.get(key, 0) + 1
        gauge = self.metrics.alerts
        gauge.clear()
        for rule in self.rules:
            for state in AlertState:
                for severity in Severity:
                    gauge.labels(state.value, rule, severity.value).set(0)
        for (state_name, rule_name, severity_name), n in counts.items():
            gauge.labels(state_name, rule_name, severity_name).set(n)


def _state_differs(before: Alert, after: Alert) -> bool:
    """Whether the alert's state or its timers changed (stored at once)."""
    return (
        before.state is not after.state
        or before.sequence != after.sequence
        or before.severity is not after.severity
        or before.clear_since != after.clear_since
        or before.pending_since != after.pending_since
        or before.firing_since != after.firing_since
        or before.resolved_at != after.resolved_at
    )


def _evidence_differs(before: Alert, after: Alert) -> bool:
    """Whether only the evidence changed: summary, figures, window, breached items."""
    return (
        before.summary != after.summary
        or before.window != after.window
        or before.latest_breached != after.latest_breached
        or before.figures != after.figures
    )


def group_key(rule: Rule, labels: Mapping[str, str]) -> GroupKey:
    return tuple(labels[label] for label in rule.group_by)

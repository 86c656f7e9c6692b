"""The scorer's faust app: item clocks per input partition, rolling windows per segment partition.

Two stages, so that aggregates stay right with several workers:

1. `clocks` consumes the co-partitioned input topics (keyed by item id). Each partition has one
   `Scoring` engine (clocks only); its item clocks are saved in the `items` table (RocksDB,
   changelogged), written once per item per batch by the scorer itself (`item_store`). Each
   gap event goes to `gapwatch.gaps.v1`, keyed by item id, and to the segment topic, keyed by
   its segment; bad input goes to the dead-letter topic with the original bytes.
2. `windows` reads the segment topic on a consumer group of its own (`segment_reader`, not
   faust), so each segment has exactly one owner; it keeps `RollingWindows` per partition,
   exports Prometheus figures, and publishes window snapshots on `gapwatch.scores.v1`. (It used
   to consume `gapwatch.gaps.v1` through faust's `group_by`, which delivered every gap event
   through faust twice and starved the windows behind a backlog of input: see
   `segment_topic_name` and `segment_reader`.)

Batches: the input stage takes up to `scorer_batch_events` events at a time, produces all their
gap events with one awaited gather (acks before the offsets can commit: at-least-once, and
re-emitted gap events keep their ids), then saves each touched item once: its changelog
records, acks awaited, then its partition's RocksDB.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from faust.types import EventT
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from gapwatch.config import load_policies
from gapwatch.core.clock import (
    ClockConfig,
    ConflictingDuplicate,
    ItemClock,
    ItemLogFull,
    SavedStateError,
)
from gapwatch.core.gaps import GapData, GapEvent, Outcome
from gapwatch.core.promise_states import PromiseChanges, make_promise_state_event
from gapwatch.core.promises import PromiseKind
from gapwatch.core.scoring import (
    STREAM_ITEM_KIND,
    LateEvent,
    OpenCounts,
    Scoring,
    ScoringConfig,
    Unscorable,
    observe_gap,
)
from gapwatch.core.timebound import FROM_THE_FUTURE, beyond_reason
from gapwatch.core.topics import Stream, topic_name
from gapwatch.core.validation import EventRejected, Rejection, decode_event
from gapwatch.core.windows import SCALAR_FIGURES, RollingWindows, SegmentKeyer
from gapwatch.kafka.batches import (
    CLOUDEVENTS_HEADERS,
    Entry,
    Headers,
    key_partition,
    send_batches,
)
from gapwatch.kafka.clients import admin_client, consumer, reliable_producer
from gapwatch.kafka.deadletter import DeadLetter, dead_letter, excerpt
from gapwatch.kafka.topics import ensure_named_topics
from gapwatch_scorer.collector import freeze_survivors
from gapwatch_scorer.input_reader import InputReader
from gapwatch_scorer.item_store import ItemStore, PartitionNotHeld, RocksItemStore, item_key
from gapwatch_scorer.loop_lag import watch_loop_lag
from gapwatch_scorer.metrics import WINDOW_SERIES, ScorerMetrics, publish_series
from gapwatch_scorer.segment_reader import SegmentReader
from gapwatch_scorer.settings import ScorerSettings

log = logging.getLogger(__name__)
SEEN_GAPS_LIMIT = 200_000
RESTORE_YIELD_EVERY = 5000
RESTORED_IDLE_SECONDS = 5.0
"""A partition restored from the store ticks from its saved clocks' time after this long idle."""
OutRecord = tuple[str, bytes, bytes] | tuple[str, bytes, bytes, Headers]
"""(topic, key, value), or with the record's own headers (a dead letter's)."""
WINDOW_FIGURES = tuple(name for name in SCALAR_FIGURES if name != "cancelled")
"""The window figures exported as gauges (cancellations are counted by the outcome counter)."""
CSAT_BY_GAP_WINDOWS = ("24h", "7d")
"""Windows whose CSAT-by-gap-bucket figures become metrics (bounded: 2 x 6 buckets x 2 stats)."""


def event_dead_letter(
    reason: str, detail: str, event: EventT, service: str = "scorer"
) -> DeadLetter:
    message = event.message
    return dead_letter(
        reason,
        detail,
        service=service,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=getattr(message, "headers", None),
    )


@dataclass
class PartitionClocks:
    """One input partition's engine, and how event time relates to wall time on it."""

    scoring: Scoring
    wall_at_watermark: dict[Stream, float] = field(default_factory=dict)
    last_event_wall: float = field(default_factory=time.time)

    def tick(self, idle_seconds: float = RESTORED_IDLE_SECONDS) -> list[GapEvent]:
        # A stream whose event time is within the grace period of the wall clock is live: its
        # timers follow the wall clock, so a breach fires at its due time even when events
        # arrive a little delayed and the partition then goes idle. A stream further behind is a
        # backfill: its event time is extrapolated at wall-clock rate from its last move, so old
        # data is not breached by today's clock.
        out: list[GapEvent] = []
        wall = time.time()
        now = datetime.fromtimestamp(wall, UTC)
        grace = timedelta(seconds=self.scoring.config.grace_seconds)
        idle = wall - self.last_event_wall >= idle_seconds
        for stream, kind in STREAM_ITEM_KIND.items():
            mark = self.scoring.stream_watermarks.get(stream)
            if not self.scoring.caught_up(stream):
                # After a restore the consumer re-reads events the saved clocks already hold;
                # ticking ahead of them would breach items before their re-read deliveries.
                # Only a partition with nothing left to read ticks from the restored time.
                if not idle:
                    continue
                mark = self.scoring.restored_watermarks[stream]
                self.wall_at_watermark.setdefault(stream, wall)
            if mark is None:
                continue
            since = wall - self.wall_at_watermark.get(stream, wall)
            extrapolated = mark + timedelta(seconds=since)
            live = now - extrapolated <= grace
            out.extend(self.scoring.tick(max(now, extrapolated) if live else extrapolated, kind))
        return out


class ScorerService:
    """Holds the engines, the output producer and the metrics; the faust agents call into it."""

    def __init__(self, settings: ScorerSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        labels = settings.segment_labels()
        self.config = ScoringConfig(
            ClockConfig.from_policies(load_policies(settings.scorer_policies_file)),
            segment_labels=labels,
            segment_cap=settings.scorer_segment_cap,
            grace_seconds=settings.scorer_grace_seconds,
            on_time_share=settings.scorer_on_time_share,
            feedback_hold_seconds=settings.scorer_feedback_hold_seconds,
        )
        self.registry = registry
        self.metrics = ScorerMetrics(registry, labels)
        self.clocks: dict[int, PartitionClocks] = {}
        self.windows: dict[int, RollingWindows] = {}
        self.windows_until: dict[int, int] = {}
        self.seen_gaps: dict[int, dict[str, None]] = {}
        self.stream_time: dict[int, datetime] = {}  # newest outcome time per segment partition
        # (segment, kind) pairs each stage-1 partition last published open counts for
        self.open_published: dict[int, set[tuple[Any, PromiseKind]]] = {}
        # The label values of each snapshot gauge's series, as last published.
        self.series: dict[str, set[tuple[str, ...]]] = {
            "open": set(),
            "csat_by_gap": set(),
            **{name: set() for name in self.metrics.window},
        }
        self.keyer = SegmentKeyer(labels, settings.scorer_segment_cap)
        prefix = settings.topic_prefix
        self.group_id = prefix + settings.scorer_app_id  # faust's consumer group is its app id
        self.gaps_topic = topic_name(Stream.GAPS, prefix)
        self.segment_topic = segment_topic_name(prefix)
        self.scores_topic = topic_name(Stream.SCORES, prefix)
        self.promises_topic = topic_name(Stream.PROMISES, prefix)
        # Records whose value is a whole CloudEvent say so (the CloudEvents Kafka binding).
        self.cloudevent_topics = dict.fromkeys(
            (self.gaps_topic, self.segment_topic, self.promises_topic), CLOUDEVENTS_HEADERS
        )
        self.deadletter_topic = topic_name(Stream.DEADLETTER, prefix)
        self.producer: AIOKafkaProducer | None = None
        self.starting = asyncio.Lock()
        # Creates the topics the worker owns (the segment topic), set by `create_app`.
        self.declare_topics: Callable[[], Awaitable[None]] | None = None
        self.loaded: set[int] = set()
        self.loading: set[int] = set()  # restoring now: neither ticks nor publishes open counts
        # The input partitions of the latest assignment; None before the first one. The worker
        # is ready (`/readyz`) once all of them are loaded.
        self.assigned: set[int] | None = None
        self.rebalances = 0  # revocations so far: a restore under way stops at one
        self.events_scored = 0  # as `gapwatch_scorer_events_total`, for `/healthz`
        # One batch at a time: the input reader's, or a restore's adoption (`_adopt_restored`).
        # A revocation waits for it, so a batch's saves are on the changelog before the
        # partitions' next owner recovers them.
        self.scoring_turn = asyncio.Lock()
        # Stages whose reader failed and has not handled a batch since: stage -> the error.
        # `/healthz` answers 503 while any is here, so a failure that repeats is seen.
        self.failing: dict[str, str] = {}
        self.retiring: set[asyncio.Task[None]] = set()

    def stage_failed(self, stage: str, exc: BaseException) -> None:
        """Count and remember a stage's failure; a Kafka error also retires the producer.

        An idempotent producer that failed a send may answer every later one with
        `OutOfOrderSequenceNumber`: the stage would fail the same way forever. The next
        `produce` starts a fresh producer; the old one is stopped aside.
        """
        reason = type(exc).__name__
        self.metrics.stage_restarts.labels(stage, reason).inc()
        self.failing[stage] = f"{reason}: {excerpt(str(exc), 200)}"
        if isinstance(exc, KafkaError) and self.producer is not None:
            old, self.producer = self.producer, None
            task = asyncio.create_task(old.stop())
            self.retiring.add(task)
            task.add_done_callback(self.retiring.discard)

    def stage_working(self, stage: str) -> None:
        """A stage handled a batch: it is no longer failing."""
        self.failing.pop(stage, None)

    async def start(self) -> None:
        async with self.starting:
            if self.producer is not None:
                return
            if self.declare_topics is not None:
                # Before any metadata request for it: a broker that creates topics on first
                # use would give it the default partition count.
                await self.declare_topics()
            producer = reliable_producer(self.settings, client_id="gapwatch-scorer")
            await producer.start()
            # Each topic's first send would otherwise wait for its metadata, in the first batch.
            for topic in (
                self.gaps_topic,
                self.segment_topic,
                self.deadletter_topic,
                self.scores_topic,
                self.promises_topic,
            ):
                await producer.partitions_for(topic)
            self.producer = producer

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def produce(self, records: Sequence[OutRecord]) -> None:
        """Send (topic, key, value[, headers]) records, each to its key's partition, in one
        batch per partition (`send_batches`), and wait for every acknowledgement."""
        if not records:
            return
        await self.start()
        producer = self.producer
        assert producer is not None
        by_partition: dict[tuple[str, int], list[Entry]] = {}
        partitions: dict[str, list[int]] = {}  # per call: a topic given partitions is seen
        for topic, key, *entry in records:
            ids = partitions.get(topic)
            if ids is None:
                ids = partitions[topic] = sorted(await producer.partitions_for(topic))
            by_partition.setdefault((topic, key_partition(key, ids)), []).append(
                (key, *entry)  # type: ignore[arg-type]  # value[, headers]
            )
        await send_batches(producer, by_partition, self.cloudevent_topics)

    async def send_changelog(
        self, topic: str, entries: dict[int, list[tuple[bytes, bytes]]]
    ) -> dict[int, int]:
        """Send (key, value) records to these partitions of `topic`; wait for every
        acknowledgement; return the newest offset written to each partition."""
        await self.start()
        assert self.producer is not None
        newest = await send_batches(
            self.producer, {(topic, number): records for number, records in entries.items()}
        )
        return {number: offset for (_, number), offset in newest.items()}

    # --- stage 1: clocks -------------------------------------------------------------------

    def partition(self, number: int) -> PartitionClocks:
        clocks = self.clocks.get(number)
        if clocks is None:
            clocks = self.clocks[number] = PartitionClocks(
                Scoring(self.config, keyer=self.keyer, track_windows=False)
            )
        return clocks

    def gap_records(self, gap: GapEvent) -> tuple[OutRecord, ...]:
        """A gap event's two records: on the gaps topic keyed by item id (for everyone), and on
        the segment topic keyed by its segment (the windows stage's input)."""
        self.metrics.gap_events.labels(gap.data.outcome.value).inc()
        value = gap.model_dump_json(exclude_none=True).encode()
        segment = _segment_key(self.keyer.key(gap.data.segment))
        return ((self.gaps_topic, gap.key, value), (self.segment_topic, segment, value))

    async def handle_inputs(self, events: Sequence[EventT], items: ItemStore) -> None:
        async with self.scoring_turn:
            await self.handle_inputs_in_turn(events, items)

    def promise_records(self, scoring: Scoring, changes: PromiseChanges) -> list[OutRecord]:
        """The promise-state records of the items a step changed (`gapwatch.promises.v1`)."""
        records = []
        for item_id, at, closed in changes:
            clock = scoring.items.get(item_id)
            if clock is None:
                continue
            for data in clock.promise_states(at, closed):
                event = make_promise_state_event(data)
                value = event.model_dump_json(exclude_none=True).encode()
                records.append((self.promises_topic, event.key, value))
        return records

    async def handle_inputs_in_turn(self, events: Sequence[EventT], items: ItemStore) -> None:
        """Score a batch, produce its gap events and save its items; `scoring_turn` is held."""
        records: list[OutRecord] = []
        touched: dict[str, tuple[EventT, ItemClock]] = {}
        not_after = self.settings.not_after()  # once a batch: the bound moves with the clock
        changed: dict[int, PromiseChanges] = {}
        for event in events:
            try:
                number = event.message.partition
                changes = changed.get(number)
                if changes is None:
                    changes = changed[number] = PromiseChanges()
                self._score(event, items, records, touched, not_after, changes)
            except PartitionNotHeld:
                raise  # not this event's fault: the reader starts again, nothing committed
            except Exception as exc:  # one event must not stop the partition
                # A bug met by one event: keep the event (dead letter with its bytes) and go on,
                # rather than crash the reader and leave the batch behind.
                message = event.message
                log.exception(
                    "internal error on %s[%s]@%s", message.topic, message.partition, message.offset
                )
                records.append(self._dead("internal_error", repr(exc), event))
        for number, changes in changed.items():
            scoring = self.partition(number).scoring
            records.extend(self.promise_records(scoring, changes))
            if scoring.before_opened:
                self.metrics.before_opening.inc(scoring.before_opened)
                scoring.before_opened = 0
            if scoring.unknown_policies:
                self.metrics.unknown_policies.inc(scoring.unknown_policies)
                scoring.unknown_policies = 0
        await self.produce(records)
        now = time.time()
        await self.save(
            [
                (event.message.partition, item_id, clock)
                for item_id, (event, clock) in touched.items()
            ],
            items,
        )
        for event in events:
            appended = event.message.timestamp
            if appended:
                self.metrics.latency.observe(max(0.0, now - appended))

    async def save(self, touched: Sequence[tuple[int, str, ItemClock]], items: ItemStore) -> None:
        """Save each (input partition, item id, clock): to the items changelog, acks awaited,
        then to the partition's database (`RocksItemStore`).

        The acks come before the batch's offsets can commit, so an acknowledged input event's
        state is never behind its offset.
        """
        if not touched:
            return
        entries: dict[int, list[tuple[bytes, bytes]]] = {}
        for number, item_id, clock in touched:
            entries.setdefault(number, []).append((item_key(item_id), clock.to_bytes()))
        newest = await self.send_changelog(items.changelog_topic, entries)
        let_go = [n for n, saved in entries.items() if not items.write(n, saved, newest[n])]
        if let_go:
            log.info("partitions %s were let go during a save: their changelog has it", let_go)

    async def group_committed(
        self, wanted: set[tuple[str, int]]
    ) -> dict[tuple[str, int], int | None]:
        """The scorer group's committed offset of each of these partitions, None where none."""
        admin = admin_client(self.settings, client_id="gapwatch-holes")
        await admin.start()
        try:
            found = await admin.list_consumer_group_offsets(
                self.group_id, partitions=[TopicPartition(t, p) for t, p in wanted]
            )
        finally:
            await admin.close()
        out: dict[tuple[str, int], int | None] = dict.fromkeys(wanted)
        for tp, meta in found.items():
            if meta is not None and meta.offset >= 0:
                out[tp.topic, tp.partition] = meta.offset
        return out

    def _score(
        self,
        event: EventT,
        items: ItemStore,
        records: list[OutRecord],
        touched: dict[str, tuple[EventT, ItemClock]],
        not_after: datetime,
        changes: PromiseChanges,
    ) -> None:
        message = event.message
        part = self.partition(message.partition)
        part.last_event_wall = time.time()
        try:
            # An event from beyond the time bound is refused here, before any clock or
            # watermark of its partition can move (`gapwatch.core.timebound`).
            decoded = decode_event(message.value or b"", not_after)
        except EventRejected as exc:
            records.append(self._dead(exc.rejection.value, str(exc), event))
            return
        if message.key != decoded.key:
            # A null key included: such a record lands wherever the producer put it, while the
            # rest of its item's events go to the subject's partition; scored apart they would
            # breach an item that was answered in time.
            shown = "null" if message.key is None else excerpt(message.key)
            detail = f"record key {shown} is not the subject {decoded.subject!r}"
            records.append(self._dead("key_mismatch", detail, event))
            return
        scoring = part.scoring
        if decoded.subject not in scoring.items:
            saved = items.get(message.partition, item_key(decoded.subject))
            if saved is not None:
                implied: list[GapEvent] = []  # by changed policies: see `ItemClock.from_bytes`
                try:
                    clock = ItemClock.from_bytes(decoded.subject, self.config.clock, saved, implied)
                except SavedStateError as exc:
                    # Scoring on an empty history would publish wrong outcomes: keep the event.
                    records.append(self._dead("state_unreadable", str(exc), event))
                    return
                scoring.adopt(clock, not_after)
                self._report_clamped(scoring)
                for gap in implied:
                    records.extend(self.gap_records(gap))
        try:
            gaps = scoring.process_and_tick(decoded)
        except Unscorable as exc:
            records.append(self._dead(exc.reason, str(exc), event))
            return
        except (LateEvent, ItemLogFull, SavedStateError, ConflictingDuplicate) as exc:
            records.append(self._dead(_REASONS[type(exc)], str(exc), event))
            return
        finally:
            _report_unreadable(scoring)
        if scoring.stream_watermarks.get(decoded.stream) == decoded.data.occurred_at:
            part.wall_at_watermark[decoded.stream] = time.time()
        self.metrics.events.labels(decoded.stream.value).inc()
        self.events_scored += 1
        for gap in gaps:
            records.extend(self.gap_records(gap))
        if decoded.stream is not Stream.FEEDBACK:
            changes.note_event(decoded.subject, decoded.data.occurred_at)
        changes.note_gaps(gaps)
        touched[decoded.subject] = (event, scoring.items[decoded.subject])

    def _dead(self, reason: str, detail: str, event: EventT, service: str = "scorer") -> OutRecord:
        self.metrics.dead_letters.labels(reason).inc()
        log.warning(
            "dead letter (%s) from %s[%s]@%s: %s",
            reason,
            event.message.topic,
            event.message.partition,
            event.message.offset,
            excerpt(detail, 300),  # a detail may quote user data: logs stay bounded
        )
        letter = event_dead_letter(reason, detail, event, service)
        return (self.deadletter_topic, letter.key, letter.value, letter.headers)

    def _report_clamped(self, scoring: Scoring) -> None:
        if scoring.clamped:
            log.warning(
                "%d restored item clocks lay beyond the time bound (saved before it existed): "
                "their partition's event time was brought back to %s",
                scoring.clamped,
                self.settings.not_after().isoformat(),
            )
            self.metrics.clamped.inc(scoring.clamped)
            scoring.clamped = 0

    def let_go_inputs(self, numbers: set[int]) -> None:
        """Drop the clocks of input partitions that went to another worker (or may have).

        A partition that comes back later is restored from its database, recovered from the
        changelog, not from memory that the other worker's events may have overtaken.
        """
        for number in numbers:
            self.clocks.pop(number, None)
            self.loaded.discard(number)

    async def load_assigned(self, assigned: set[int], items: ItemStore) -> None:
        """Hold exactly the assigned partitions; restore every saved item of a new one.

        Restored clocks bring their timers back, so an item that gets no further event still
        breaches on time after a restart or a rebalance. They are restored resting
        (`ItemClock.restore`: timers and open counts from each saved summary, the log re-folded
        on first use), straight from each partition's RocksDB, yielding to the event loop every
        few thousand items so heartbeats and input keep flowing. A partition counts as loaded
        (it ticks and publishes open counts) only once all its items are in.
        """
        self.assigned = set(assigned)
        for number in self.loaded - assigned:
            self.clocks.pop(number, None)
        rebalances = self.rebalances
        new = sorted(assigned - self.loaded)
        for number in new:
            started = time.monotonic()
            self.loading.add(number)
            # A restore makes millions of long-lived objects: the cyclic collector would scan
            # them all again and again while they are made, and after (`gc.freeze` moves what
            # exists now out of its sight; clocks are freed by reference counting anyway).
            collecting = gc.isenabled()
            gc.disable()
            try:
                restored = await self._restore_partition(number, items, rebalances)
            finally:
                self.loading.discard(number)
                if collecting:
                    gc.enable()
            if restored is None or self.rebalances != rebalances:
                self.clocks.pop(number, None)  # a rebalance began: load it again when it ends
                return
            self.loaded.add(number)
            log.info(
                "restored %d items of partitions [%d] in %.1fs",
                restored,
                number,
                time.monotonic() - started,
            )
        self.loaded &= assigned
        if new:
            gc.freeze()

    async def _restore_partition(
        self, number: int, items: ItemStore, rebalances: int
    ) -> int | None:
        scoring = self.partition(number).scoring
        config = self.config.clock
        restored = 0
        batch: list[ItemClock] = []
        # Gap events that changed policies imply for restored open promises (`ItemClock.restore`
        # re-folds a clock saved under other policies): see `_adopt_restored`.
        implied: list[GapEvent] = []
        published = 0
        for key, value in items.saved(number):
            try:
                item_id = orjson.loads(key)
                if item_id in scoring.items:
                    continue  # an event already brought it in; that copy is newer
                batch.append(ItemClock.restore(item_id, config, value, implied))
            except (orjson.JSONDecodeError, SavedStateError) as exc:
                log.error("%s; its events will be dead-lettered as state_unreadable", exc)
                continue
            if len(batch) >= RESTORE_YIELD_EVERY:
                restored += await self._adopt_restored(scoring, batch, implied)
                published += len(implied)
                batch.clear()
                implied.clear()
                await asyncio.sleep(0)
                if self.rebalances != rebalances:
                    return None
        restored += await self._adopt_restored(scoring, batch, implied)
        published += len(implied)
        if published:
            log.info(
                "partition %d: published %d gap events that changed policies imply",
                number,
                published,
            )
        return restored

    async def _adopt_restored(
        self, scoring: Scoring, batch: list[ItemClock], implied: list[GapEvent]
    ) -> int:
        """Publish what changed policies imply for these restored clocks, adopt them, and
        publish the timers of theirs that the partition's event time has already passed.

        Publishing first closes a window: until a clock is adopted, no event can save it (an
        event for its item loads its own copy from the store, implied events and all, and
        publishes them with its batch), so no save can land before the implied events' acks.
        A crash before the acks restores and re-folds them again. A clock an event loaded
        meanwhile is newer than the restored one, and is kept.

        Events read before the restore got this far could not fire the timers of clocks not
        yet adopted, and with no further event (or no wall clock) nothing else would
        (`Scoring.fire_passed`). That is done in the scoring turn, acks awaited: no batch can
        save a clock with such a timer fired before its gap event is acknowledged.
        """
        await self.produce([r for gap in implied for r in self.gap_records(gap)])
        async with self.scoring_turn:
            count = scoring.adopt_many(
                (clock for clock in batch if clock.item_id not in scoring.items),
                self.settings.not_after(),
            )
            self._report_clamped(scoring)
            fired = scoring.fire_passed()
            _report_unreadable(scoring)
            await self.produce(
                [r for gap in fired for r in self.gap_records(gap)]
                + self.promise_records(scoring, _changes_of(fired))
            )
        return count

    async def sweep_feedback(self, items: ItemStore) -> None:
        """Drop (and count) feedback past its hold, saving the clocks it leaves; export how
        much still waits."""
        waiting: dict[str, int] = {"item_never_seen": 0, "never_delivered": 0}
        for number, part in list(self.clocks.items()):
            scoring = part.scoring
            if number in self.loading or scoring.watermark is None or not scoring.waiting:
                continue
            changed = scoring.sweep_feedback(scoring.watermark)
            for reason, count in scoring.unjoined.items():
                self.metrics.feedback_unjoined.labels(reason).inc(count)
            scoring.unjoined.clear()
            if changed:
                async with self.scoring_turn:
                    await self.save([(number, c.item_id, c) for c in changed], items)
            for reason, count in scoring.feedback_waiting().items():
                waiting[reason] += count
        for reason, count in waiting.items():
            self.metrics.feedback_waiting.labels(reason).set(count)

    async def tick(self) -> None:
        self.metrics.items.set(sum(len(p.scoring.items) for p in self.clocks.values()))
        if not self.settings.scorer_wall_clock:
            return
        records = []
        for number, part in list(self.clocks.items()):
            if number not in self.loading:
                fired = part.tick()
                for gap in fired:
                    records.extend(self.gap_records(gap))
                records.extend(self.promise_records(part.scoring, _changes_of(fired)))
                _report_unreadable(part.scoring)
        await self.produce(records)

    async def export_open_counts(self) -> list[OutRecord]:
        """Open / at-risk / overdue gauges of this worker's items, and their snapshot records.

        Counting visits every item in memory, so it pauses every few thousand items and lets
        the input batches run between (a million items would otherwise hold the loop for most
        of a second each snapshot). A segment whose last open promise closed gets one record of
        zeros, so a reader of the scores topic (the alerter) sees overdue counts fall to 0
        instead of keeping the last.
        """
        counted: dict[int, dict[tuple[Any, PromiseKind], OpenCounts]] = {}
        for number, part in list(self.clocks.items()):
            if number in self.loading:
                continue  # half restored: readers keep the counts last published for it
            counts: dict[tuple[Any, PromiseKind], OpenCounts] = {}
            for _ in part.scoring.count_open(counts):
                await asyncio.sleep(0)
            if self.clocks.get(number) is part and number not in self.loading:
                counted[number] = counts  # else let go (or reloading) meanwhile
        records = []
        series: dict[tuple[str, ...], float] = {}
        as_of = datetime.now(UTC).isoformat()
        for number, counts in counted.items():
            published: set[tuple[Any, PromiseKind]] = set()
            for (segment, kind), open_counts in counts.items():
                values = tuple(v for _, v in segment)
                for state in ("open", "at_risk", "overdue"):
                    labels = (*values, kind.value, state)
                    series[labels] = series.get(labels, 0) + getattr(open_counts, state)
                published.add((segment, kind))
                records.append(
                    self._open_record(
                        number,
                        segment,
                        kind,
                        as_of,
                        open_counts.open,
                        open_counts.at_risk,
                        open_counts.overdue,
                    )
                )
            for segment, kind in self.open_published.get(number, set()) - published:
                records.append(self._open_record(number, segment, kind, as_of, 0, 0, 0))
            self.open_published[number] = published
        self.series["open"] = publish_series(self.metrics.open, series, self.series["open"])
        return records

    def _open_record(
        self,
        number: int,
        segment: Any,
        kind: PromiseKind,
        as_of: str,
        open_: int,
        at_risk: int,
        overdue: int,
    ) -> OutRecord:
        record = {
            "kind": "open",
            "segment": dict(segment),
            "promise_kind": kind.value,
            "source_partition": number,
            "open": open_,
            "at_risk": at_risk,
            "overdue": overdue,
            "as_of": as_of,
        }
        return (self.scores_topic, _segment_key(segment), orjson.dumps(record))

    # --- stage 2: windows ------------------------------------------------------------------

    async def handle_gaps(self, events: Sequence[EventT]) -> None:
        letters: list[OutRecord] = []
        not_after = self.settings.not_after()
        for event in events:
            message = event.message
            number = message.partition
            if number not in self.windows_until:
                await self.rebuild_windows(message.topic, number, message.offset)
            if message.offset < self.windows_until[number]:
                continue  # already counted by the rebuild
            self.windows_until[number] = message.offset + 1
            try:
                self._observe(number, message.value or b"", count=True, not_after=not_after)
            except GapFromTheFuture as exc:
                letters.append(self._dead(FROM_THE_FUTURE, str(exc), event, "scorer-windows"))
            except ValidationError as exc:
                # The gaps topic is open to any producer: a record that is not a gap event is
                # kept (dead letter, original bytes), not counted, and the windows go on.
                reason = Rejection.SCHEMA_INVALID
                if any(e["type"] == "json_invalid" for e in exc.errors()):
                    reason = Rejection.MALFORMED_JSON
                detail = f"not a gap event: {exc.error_count()} errors; {exc.errors()[0]['msg']}"
                letters.append(self._dead(reason.value, detail, event, "scorer-windows"))
        # Before the batch's offsets commit, as for the input stage.
        await self.produce(letters)

    def forget_windows(self, number: int) -> None:
        self.windows.pop(number, None)
        self.windows_until.pop(number, None)
        self.seen_gaps.pop(number, None)
        self.stream_time.pop(number, None)

    def _observe(self, number: int, value: bytes, *, count: bool, not_after: datetime) -> None:
        gap = GapEvent.model_validate_json(value)
        if gap.data.outcome_at > not_after:
            # Not counted: it would move the windows' time, which never goes back (an input
            # event this far ahead is refused now; a gap event written before that was not).
            raise GapFromTheFuture(gap.data.outcome_at, not_after)
        seen = self.seen_gaps.setdefault(number, {})
        if gap.id in seen:
            return  # a gap event re-emitted after a crash keeps its id: count it once
        seen[gap.id] = None
        if len(seen) > SEEN_GAPS_LIMIT:
            del seen[next(iter(seen))]
        held = self.stream_time.get(number)
        if held is None or gap.data.outcome_at > held:
            self.stream_time[number] = gap.data.outcome_at
        windows = self.windows.get(number)
        if windows is None:
            windows = self.windows[number] = RollingWindows(
                self.keyer, gap.data.outcome_at, on_time_share=self.config.on_time_share
            )
        observe_gap(windows, gap.data)
        if count:
            self._count(gap.data)

    async def rebuild_windows(self, topic: str, number: int, until: int) -> None:
        """Refill a segment partition's windows from the last 7 days of its gap events.

        Windows live in memory; after a restart or a rebalance they are rebuilt from the
        repartition topic up to the first offset the stream will deliver, so a restart neither
        loses nor double-counts what the windows held (Prometheus counters are not replayed).
        """
        started = time.monotonic()
        tp = TopicPartition(topic, number)
        reader = consumer(self.settings, enable_auto_commit=False, client_id="gapwatch-windows")
        await reader.start()
        replayed = 0
        try:
            reader.assign([tp])
            not_after = self.settings.not_after()
            since = datetime.now(UTC) - timedelta(days=7, hours=2)
            found = await reader.offsets_for_times({tp: int(since.timestamp() * 1000)})
            start = found[tp].offset if found.get(tp) is not None else None
            if start is None:
                await reader.seek_to_beginning(tp)
            else:
                reader.seek(tp, start)
            position = await reader.position(tp)
            while position < until:
                # `until` is an offset the stream is about to deliver, so it exists: an empty
                # fetch only means a slow broker, never the end (stopping early would leave the
                # windows short of what they held).
                batch = await reader.getmany(tp, timeout_ms=2000, max_records=5000)
                records = batch.get(tp, [])
                for record in records:
                    if record.offset >= until:
                        break
                    try:
                        self._observe(number, record.value or b"", count=False, not_after=not_after)
                    except (ValidationError, GapFromTheFuture):
                        continue  # dead-lettered when the stream delivered it
                    replayed += 1
                position = await reader.position(tp)
        finally:
            await reader.stop()
        self.windows_until[number] = until
        log.info(
            "rebuilt windows of segment partition %d from %d gap events in %.1fs",
            number,
            replayed,
            time.monotonic() - started,
        )

    def _count(self, gap: GapData) -> None:
        if gap.outcome is Outcome.FEEDBACK:
            return
        values = [gap.segment.get(label, "none") for label in self.metrics.segment_labels]
        key = self.keyer.key(gap.segment)
        values = [v for _, v in key] if key == self.keyer.other else values
        kind = gap.promise_kind.value
        m = self.metrics
        m.outcomes.labels(*values, kind, gap.outcome.value).inc()
        if gap.gap_seconds is not None and gap.outcome in (Outcome.MET, Outcome.DELIVERED_LATE):
            m.gap_seconds.labels(*values, kind).observe(gap.gap_seconds)
        if gap.delivered_seconds is not None:
            m.delivered_seconds.labels(*values, kind).observe(gap.delivered_seconds)
        if gap.outcome in (Outcome.MET, Outcome.BREACHED):
            m.promised_seconds.labels(*values, kind).observe(gap.promised_seconds)

    def snapshot_records(self) -> list[OutRecord]:
        records = []
        # metric -> label values -> value (`WINDOW_SERIES` names each figure's metric).
        window: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in self.metrics.window}
        by_gap: dict[tuple[str, ...], float] = {}
        now = datetime.now(UTC)
        lead = timedelta(seconds=self.settings.scorer_windows_lead_seconds)
        for number, windows in self.windows.items():
            # Windows follow the wall clock, or the gap events' own time when that runs ahead
            # (a replay or an accelerated simulation), but never more than `lead` ahead: one
            # event with a wrong clock must not expire every window.
            stream = self.stream_time.get(number, now)
            as_of = max(now, windows.watermark, min(stream, now + lead))
            for figures in windows.snapshot(as_of):
                values = tuple(
                    figures.segment.get(label, "none") for label in self.metrics.segment_labels
                )
                if figures.promise_kind is None:
                    # Job completions (first-time fix) belong to no promise: kind "none".
                    if figures.ftf_rate is not None:
                        for name in ("ftf_rate", "ftf_count"):
                            metric, extra = WINDOW_SERIES[name]
                            key = (*values, "none", figures.window, *extra)
                            window[metric][key] = getattr(figures, name)
                    continue
                kind = figures.promise_kind.value
                for name in WINDOW_FIGURES:
                    value = getattr(figures, name)
                    if value is not None:
                        metric, extra = WINDOW_SERIES[name]
                        window[metric][(*values, kind, figures.window, *extra)] = value
                if figures.window in CSAT_BY_GAP_WINDOWS:
                    for bucket, csat in figures.csat_by_gap_bucket.items():
                        if csat.count and csat.mean is not None:
                            labels = (*values, kind, figures.window, bucket)
                            by_gap[(*labels, "sum")] = csat.mean * csat.count
                            by_gap[(*labels, "count")] = csat.count
                record = {"kind": "window", **figures.as_dict()}
                key = _segment_key(tuple(sorted(figures.segment.items())))
                records.append((self.scores_topic, key, orjson.dumps(record)))
        metrics, series = self.metrics, self.series
        for name, gauge in metrics.window.items():
            series[name] = publish_series(gauge, window[name], series[name])
        series["csat_by_gap"] = publish_series(metrics.csat_by_gap, by_gap, series["csat_by_gap"])
        return records


class GapFromTheFuture(Exception):
    """A gap event whose outcome time lies beyond the time bound; the windows skip it."""

    def __init__(self, at: datetime, not_after: datetime) -> None:
        super().__init__(f"gap event outcome_at: {beyond_reason(at, not_after)}")


_REASONS: dict[type[Exception], str] = {
    LateEvent: LateEvent.reason,
    ItemLogFull: "item_log_full",
    SavedStateError: "state_unreadable",
    ConflictingDuplicate: ConflictingDuplicate.reason,
}
"""Dead-letter reasons of the input events the scoring core refuses."""


def _changes_of(gaps: Sequence[GapEvent]) -> PromiseChanges:
    changes = PromiseChanges()
    changes.note_gaps(gaps)
    return changes


def _report_unreadable(scoring: Scoring) -> None:
    """Log the restored clocks a timer found unreadable (their next event is dead-lettered)."""
    for exc in scoring.unreadable:
        log.error("%s; its timers stop and its next event will be dead-lettered", exc)
    scoring.unreadable.clear()


def segment_topic_name(prefix: str) -> str:
    """The topic of the gap events keyed by segment: the windows stage's input, one owner per
    segment. The clocks stage writes it beside the gaps topic. The name is the one faust's
    `group_by` gave it when the windows stage re-keyed the gaps topic itself (until 2026-11-24),
    so the windows' 7-day history carries over."""
    gaps = topic_name(Stream.GAPS, prefix)
    return f"gapwatch_scorer.app.windows-{gaps}-gaps-by-segment-repartition"


def _segment_key(segment: tuple[tuple[str, str], ...]) -> bytes:
    return "|".join(f"{k}={v}" for k, v in segment).encode()


def faust_credentials(settings: ScorerSettings) -> Any:
    from gapwatch.kafka.clients import connection_options

    options = connection_options(settings)
    if settings.kafka_sasl_mechanism:
        return faust.SASLCredentials(
            username=options["sasl_plain_username"],
            password=options["sasl_plain_password"],
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=options["ssl_context"],
        )
    if options["ssl_context"] is not None:
        return faust.SSLCredentials(options["ssl_context"])
    return None


def create_app(settings: ScorerSettings, registry: CollectorRegistry | None = None) -> faust.App:
    """Build the faust app (nothing runs until a worker starts it)."""
    registry = registry if registry is not None else CollectorRegistry()
    service = ScorerService(settings, registry)
    app = faust.App(
        # faust names its internal topics (changelogs, repartitions) after the app id, so the
        # topic prefix goes in too: isolated copies on one cluster never share state topics.
        settings.topic_prefix + settings.scorer_app_id,
        broker=f"kafka://{settings.kafka_bootstrap.split(',')[0]}",
        broker_credentials=faust_credentials(settings),
        # faust runs the worker (timers, web, shutdown); the stages read Kafka on their own
        # consumer groups (`input_reader`, `segment_reader`) and keep no faust table.
        store="memory://",
        datadir=str(settings.scorer_data_dir),
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        web_enabled=True,
        web_bind=settings.scorer_host,
        web_host=settings.scorer_host,
        web_port=settings.scorer_port,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=1000,
        # A worker killed with -9 holds its partitions until the session expires.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        consumer_group_instance_id=settings.scorer_instance_id,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        table_standby_replicas=0,
        # faust's leader topic is then all its consumer subscribes to: faust refuses to start
        # with no topic at all, and its consumer group is otherwise idle.
    )
    items = RocksItemStore(
        settings.scorer_data_dir / "items", service.group_id + "-items-changelog"
    )
    reader = InputReader(service, items)

    async def declare_topics() -> None:
        # The segment topic, the items changelog and the promise states (both compacted),
        # with the inputs' partitions: an upgrade that adds one needs no `gapwatch topics`.
        compact = {"cleanup.policy": "compact"}
        await ensure_named_topics(
            settings,
            {
                service.segment_topic: {},
                items.changelog_topic: compact,
                service.promises_topic: compact,
            },
        )

    service.declare_topics = declare_topics

    @app.timer(interval=settings.scorer_tick_seconds)
    async def tick() -> None:
        if reader.settled and reader.assigned != service.loaded:
            await service.load_assigned(set(reader.assigned), items)
        await service.tick()
        freeze_survivors()

    @app.timer(interval=settings.scorer_snapshot_seconds)
    async def sweep() -> None:
        await service.sweep_feedback(items)

    @app.timer(interval=settings.scorer_snapshot_seconds)
    async def snapshot() -> None:
        await service.produce(service.snapshot_records() + await service.export_open_counts())

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # Rendered in a thread: a scrape of a few thousand series takes ~100 ms of Python,
        # which on the event loop would hold every batch and timer that long.
        text = await asyncio.to_thread(generate_latest, registry)
        return web.bytes(text, content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        # The count of input events scored: a cheap "is it moving?" (benchmarks poll it).
        # A stage that failed and has not handled a batch since makes it 503, with the error.
        if service.failing:
            return web.json(
                {
                    "status": "failing",
                    "failing": service.failing,
                    "events_scored": service.events_scored,
                },
                status=503,
            )
        return web.json({"status": "ok", "events_scored": service.events_scored})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        # Ready once every assigned input partition is restored (its saved clocks back, its
        # timers running): a rolling update that moved on before would leave breaches late.
        assigned = service.assigned
        waiting = sorted((assigned or set()) - service.loaded)
        ready = assigned is not None and not waiting and not service.failing
        body = {
            "status": "ready" if ready else "not ready",
            "assigned": sorted(assigned or ()),
            "restoring": waiting,
            "failing": service.failing,
        }
        return web.json(body, status=200 if ready else 503)

    stages: list[asyncio.Task[Any]] = []

    @app.task
    async def _start_stages() -> None:
        await service.start()  # the topics and the producer, before the first batch
        # The windows stage, and the clocks stage, until the worker stops.
        stages.extend(
            asyncio.create_task(run(), name=name)
            for name, run in (
                ("windows", SegmentReader(service).run),
                ("clocks", reader.run),
                ("loop-lag", lambda: watch_loop_lag(service.metrics.loop_lag)),
            )
        )
        await asyncio.gather(*stages)

    @app.on_before_shutdown.connect
    async def _stop_stages(app_: Any, **_: Any) -> None:
        for stage in stages:
            stage.cancel()
        await asyncio.gather(*stages, return_exceptions=True)  # each commits what it handled
        await service.stop()
        items.close(items.held)

    app.gapwatch_service = service  # type: ignore[attr-defined]
    return app

"""The clocks stage's input: the input topics, read on a consumer group of its own (not faust).

faust delivered each input record through its per-message path (several tasks and an
`asyncio.wait` per record), which capped a worker at ~7k events/s before any scoring, and
cost the scorer about half its time: on a plain aiokafka loop the same work ran ~2x faster
(`bench-scorer`'s "scorer's work on plain aiokafka"). Here a plain aiokafka consumer hands the
records in batches (`getmany`: whatever has arrived, up to `scorer_batch_events`, so a batch
never waits for more while events are waiting) to `ScorerService.handle_inputs`.

Partitions: the input topics are co-partitioned by item id, and the range assignor gives each
worker the same partition numbers of every input topic; each number has one engine and one
item database (`RocksItemStore`). The assignment callback pauses every assigned partition and
returns (aiokafka sends no heartbeats while it runs); a background task then catches each
partition's database up with the items changelog and resumes it. Its clocks are then restored
by the tick timer (`ScorerService.load_assigned`) while its events are scored (an item's first
event loads its clock from the database). Records aiokafka hands over for a partition not yet
recovered are sought back to, not scored.

Offsets: committed every `COMMIT_SECONDS` and at each revocation, only ever up to events whose
gap events and saves are acknowledged (at-least-once; a re-read event is ignored by its clock
and re-emitted gap events keep their ids). A revocation waits for the batch under way to finish
(saves included), commits, and a batch fetched before it and not yet scored is dropped: its
events are read again from the committed offsets by whoever owns them next.

The group is the scorer's group id with `-clocks` appended. A partition with no commit in it
yet starts where faust's group left it (inputs were read through faust until 2026-11-24), so an
upgrade neither re-scores history nor skips any.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from faust.types import EventT

from gapwatch.core.topics import INPUT_STREAMS, topic_name
from gapwatch.kafka.clients import consumer
from gapwatch_scorer.item_store import RocksItemStore
from gapwatch_scorer.records import Record, Undelivered

if TYPE_CHECKING:
    from gapwatch_scorer.app import ScorerService
    from gapwatch_scorer.settings import ScorerSettings

log = logging.getLogger(__name__)

RESTART_SECONDS = 1.0
"""Pause before the reader starts again after an unexpected error."""
GROUP_SUFFIX = "-clocks"
"""The input reader's consumer group is the scorer's group id with this appended."""
COMMIT_SECONDS = 1.0
"""How often the offsets of handled batches are committed (and at every revocation)."""


class InputReader:
    """Reads the input topics into the service's clocks until cancelled."""

    def __init__(self, service: ScorerService, items: RocksItemStore) -> None:
        self.service = service
        self.items = items
        self.group_id = service.group_id + GROUP_SUFFIX
        self.topics = [topic_name(s, service.settings.topic_prefix) for s in INPUT_STREAMS]
        self.reader: AIOKafkaConsumer | None = None
        self.generation = 0
        """Counts revocations: a batch fetched in an earlier generation is not scored."""
        self.assigned: set[int] = set()
        """Input partition numbers held and recovered: the tick timer restores their clocks."""
        self.revoking: set[int] = set()
        """Revoked by the rebalance under way; let go unless assigned again."""
        self.handled: dict[TopicPartition, int] = {}
        """Next offset to commit per input partition (its events' saves are acknowledged)."""
        self.committed_at = 0.0
        self.committing: asyncio.Task[None] | None = None
        self.recovering: asyncio.Task[None] | None = None
        self.failure: Exception | None = None
        self.fetched: dict[TopicPartition, int] = {}
        """Next offset to fetch per input partition held (for the lag gauge)."""

    def _consumer(self) -> AIOKafkaConsumer:
        return stage_consumer(
            self.service.settings,
            self.group_id,
            "gapwatch-clocks",
            # Co-partitioned topics: partition n of every input topic to the same worker.
            partition_assignment_strategy=(RangePartitionAssignor,),
        )

    async def run(self) -> None:
        while True:
            self.failure = None
            reader = self.reader = self._consumer()
            try:
                reader.subscribe(self.topics, listener=_Rebalance(self))
                await reader.start()
                await self._read(reader)
            except asyncio.CancelledError:
                if self.reader is not None and self.handled:  # the worker is stopping
                    with contextlib.suppress(KafkaError, OSError):
                        await asyncio.wait_for(self.commit(reader), 5)
                raise
            except Exception as exc:
                log.exception("input reader failed; starting again in %.0fs", RESTART_SECONDS)
                self.service.stage_failed("clocks", exc)
                # It rejoins with nothing: whatever it is given is recovered and restored anew.
                self._let_go(set(self.assigned) | self.revoking | self.items.held)
                self.revoking.clear()
                self.handled.clear()
                await asyncio.sleep(RESTART_SECONDS)
            finally:
                self.reader = None
                for task in (self.committing, self.recovering):
                    if task is not None:
                        task.cancel()
                await reader.stop()

    async def _read(self, reader: AIOKafkaConsumer) -> None:
        service = self.service
        batch_events = service.settings.scorer_batch_events
        while True:
            if self.failure is not None:
                raise self.failure  # a recovery failed: start again (rejoin) from scratch
            batch = await reader.getmany(timeout_ms=1000, max_records=batch_events)
            generation = self.generation  # of the assignment the batch was fetched under
            if early := {tp: r for tp, r in batch.items() if tp.partition not in self.assigned}:
                # aiokafka hands over the new assignment's records before the assignment
                # callback has paused them; a partition not yet recovered waits for it.
                self._fetch_again(reader, early)
                batch = {tp: r for tp, r in batch.items() if tp not in early}
            for tp, records in batch.items():
                if records:
                    self.fetched[tp] = records[-1].offset + 1
            events = [
                cast(EventT, Undelivered(Record(tp.topic, tp.partition, record)))
                for tp, records in batch.items()
                for record in records
            ]
            if events:
                async with service.scoring_turn:
                    if self.generation == generation:
                        await service.handle_inputs_in_turn(events, self.items)
                        service.stage_working("clocks")
                        for tp, records in batch.items():
                            if records:
                                self.handled[tp] = records[-1].offset + 1
                    else:
                        self._fetch_again(reader, batch)
            if time.monotonic() - self.committed_at >= COMMIT_SECONDS and not self.committing:
                # Beside the reading, not in its way: a commit is a round trip to the broker.
                self.committed_at = time.monotonic()
                self.committing = asyncio.create_task(self._commit_and_export_lag(reader))

    async def _commit_and_export_lag(self, reader: AIOKafkaConsumer) -> None:
        try:
            self.service.metrics.lag.set(self._lag(reader))
            await self.commit(reader)
        finally:
            self.committing = None

    def _lag(self, reader: AIOKafkaConsumer) -> int:
        """Records between what was fetched and the high watermark, over the partitions held
        (no broker request: a revocation waits for the commit task)."""
        lag = 0
        for tp in reader.assignment():
            end, fetched = reader.highwater(tp), self.fetched.get(tp)
            if end is not None and fetched is not None:
                lag += max(0, end - fetched)
        return lag

    @staticmethod
    def _fetch_again(reader: AIOKafkaConsumer, batch: dict[TopicPartition, list[Any]]) -> None:
        """A revocation came between a batch's fetch and its turn: drop the batch, and read it
        again where its partitions are still (or again) this worker's. The others' next owner
        reads it from the committed offsets."""
        held = reader.assignment()
        for tp, records in batch.items():
            if records and tp in held:
                reader.seek(tp, records[0].offset)

    async def commit(self, reader: AIOKafkaConsumer) -> None:
        """Commit the offsets handled so far (after any commit still on its way)."""
        if self.committing is not None and self.committing is not asyncio.current_task():
            await asyncio.wait([self.committing])
        if not self.handled:
            return
        offsets, self.handled = self.handled, {}
        try:
            await reader.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (a rebalance): the partitions' next owner reads these events
            # again, and their clocks ignore what they already hold.
            log.info("input offsets not committed (%r): a rebalance is under way", exc)
        except (KafkaError, OSError) as exc:
            # The broker is away: the next commit carries these offsets (or newer ones).
            log.warning("input offsets not committed (%r): trying again with the next", exc)
            for tp, offset in offsets.items():
                self.handled[tp] = max(offset, self.handled.get(tp, 0))

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        """A rebalance begins: finish the batch under way (its saves included) and commit."""
        self.generation += 1
        self.service.rebalances += 1  # a restore under way stops; it starts again after
        if self.recovering is not None:
            self.recovering.cancel()  # each write is whole: the next recovery goes on from it
            await asyncio.wait([self.recovering])
        self.fetched.clear()
        async with self.service.scoring_turn:
            if self.reader is not None:
                await self.commit(self.reader)
            self.handled.clear()
            self.revoking |= {tp.partition for tp in revoked}

    @property
    def settled(self) -> bool:
        """No recovery under way: `assigned` is the assignment's (the tick restores it)."""
        return self.recovering is None or self.recovering.done()

    def _let_go(self, numbers: set[int]) -> None:
        self.service.let_go_inputs(numbers)
        self.assigned -= numbers
        self.items.close(numbers)

    def assigned_partitions(self, assigned: set[TopicPartition]) -> None:
        """Pause the assigned partitions, let go of the ones revoked and not given back, and
        recover the rest in the background (`_recover`), which resumes them.

        Not awaited work: aiokafka sends no heartbeats while this callback runs, so a recovery
        here longer than the session timeout would cost the worker its membership.
        """
        if self.reader is not None:
            self.reader.pause(*assigned)  # before any await: nothing is read until recovered
        numbers = {tp.partition for tp in assigned}
        by_topic = {t: {tp.partition for tp in assigned if tp.topic == t} for t in self.topics}
        if any(held != numbers for held in by_topic.values()):
            log.error("input topics assigned unevenly (not co-partitioned?): %s", by_topic)
        self._let_go(self.revoking - numbers)
        self.revoking.clear()
        self.assigned = set()  # scored again once recovered; the clocks kept stay in memory
        if self.reader is not None:
            self.recovering = asyncio.create_task(
                self._recover(self.reader, assigned, self.generation)
            )

    async def _recover(
        self, reader: AIOKafkaConsumer, assigned: set[TopicPartition], generation: int
    ) -> None:
        """Bring every assigned partition's database up to its changelog's end (a catch-up of
        nothing for one this worker kept), start where faust's group left where nothing is
        committed, then resume reading them.

        A partition kept whose changelog moved on meanwhile had another owner after all (this
        worker was out of the group for a while): its clocks in memory are dropped, and the
        tick restores them from the recovered database.
        """
        numbers = {tp.partition for tp in assigned}
        kept = set(self.service.clocks) & numbers
        while True:
            try:
                applied = await self.items.recover(self.service.settings, numbers)
                await start_where_faust_left(self.service, reader, assigned)
                break
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning(
                    "recovering input partitions %s failed (%r); again", sorted(numbers), exc
                )
                await asyncio.sleep(RESTART_SECONDS)
            except Exception as exc:
                log.exception("recovering input partitions %s failed", sorted(numbers))
                self.failure = exc
                return
        if self.generation != generation:
            return  # revoked meanwhile: the next assignment recovers again
        if moved := {n for n in kept if applied.get(n)}:
            log.warning("input partitions %s changed under another owner: restored again", moved)
            self.service.let_go_inputs(moved)
        self.assigned = numbers
        reader.resume(*assigned)


def stage_consumer(
    settings: ScorerSettings, group_id: str, client_id: str, **extra: Any
) -> AIOKafkaConsumer:
    """A stage's consumer: its own group, offsets committed by the stage after each batch's
    output is acknowledged, batches of up to `scorer_batch_events`."""
    return consumer(
        settings,
        group_id=group_id,
        group_instance_id=settings.scorer_instance_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # As the faust group had it: a worker killed -9 holds its partitions this long at most.
        session_timeout_ms=10_000,
        heartbeat_interval_ms=2_000,
        max_poll_records=settings.scorer_batch_events,
        **extra,
    )


async def start_where_faust_left(
    service: ScorerService, reader: AIOKafkaConsumer, assigned: set[TopicPartition]
) -> None:
    """Seek each assigned partition with no commit in the reader's group to the offset faust's
    group (the scorer's group id) committed for it, if any."""
    fresh = [tp for tp in assigned if await reader.committed(tp) is None]
    if not fresh:
        return
    try:
        found = await service.group_committed({(tp.topic, tp.partition) for tp in fresh})
    except (KafkaError, OSError, TimeoutError) as exc:
        log.warning("faust's offsets of %s not read (%r): from the start", fresh, exc)
        return
    for tp in fresh:
        offset = found.get((tp.topic, tp.partition))
        if offset is not None:
            reader.seek(tp, offset)


async def consumer_lag(reader: AIOKafkaConsumer) -> int:
    """Records between the reader's positions and the high watermarks of its partitions."""
    lag = 0
    for tp in reader.assignment():
        end = reader.highwater(tp)
        if end is None:
            continue  # not fetched yet
        try:
            lag += max(0, end - await reader.position(tp))
        except IllegalStateError:
            continue  # revoked meanwhile
    return lag


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: InputReader) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.owner.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.owner.assigned_partitions(assigned)

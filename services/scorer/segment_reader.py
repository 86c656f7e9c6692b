"""The windows stage's input: the segment topic, read on a consumer group of its own beside faust.

faust delivered the segment topic to the windows agent through the same per-message path as the
inputs. That path blocks on the clocks agent's full buffer, so behind an input backlog the
windows got nothing until the backlog was nearly drained (window figures, snapshots and alerts
lagging through every catch-up), and each gap event cost a faust delivery (~140 µs of the
worker's one core). Here a plain aiokafka consumer reads it in batches (`getmany`), hands them
to `ScorerService.handle_gaps`, and commits their offsets after.

The group is the scorer's group id with `-windows` appended: one owner per segment partition
across workers, as before. Windows live in memory: a partition revoked is forgotten, and one
assigned is rebuilt from its history up to where reading starts: by `handle_gaps` when its
first record arrives, or at once when nothing new waits for it (`_rebuild_quiet`). A
partition with no commit in this group yet starts where faust's group left it (the windows
stage ran on faust until 2026-11-24), so an upgrade neither re-counts history nor skips any.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from faust.types import EventT

from gapwatch_scorer.input_reader import consumer_lag, stage_consumer, start_where_faust_left
from gapwatch_scorer.records import Record, Undelivered

if TYPE_CHECKING:
    from gapwatch_scorer.app import ScorerService

log = logging.getLogger(__name__)

RESTART_SECONDS = 1.0
"""Pause before the reader starts again after an unexpected error."""


class SegmentReader:
    """Reads the segment topic into the service's windows until cancelled."""

    def __init__(self, service: ScorerService) -> None:
        self.service = service
        self.group_id = service.group_id + "-windows"
        self.generation = 0  # counts revocations
        self.reader: AIOKafkaConsumer | None = None
        # Held while a batch is counted and committed: a revocation waits for it, so a batch
        # is either counted and committed here or left whole to the partition's next owner,
        # never counted by both (Prometheus counters are summed across workers).
        self.turn = asyncio.Lock()

    def _consumer(self) -> AIOKafkaConsumer:
        return stage_consumer(self.service.settings, self.group_id, "gapwatch-windows")

    async def run(self) -> None:
        while True:
            reader = self.reader = self._consumer()
            try:
                reader.subscribe([self.service.segment_topic], listener=_Rebalance(self))
                await reader.start()
                await self._read(reader)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("windows reader failed; starting again in %.0fs", RESTART_SECONDS)
                self.service.stage_failed("windows", exc)
                # Whatever it holds when it rejoins is rebuilt from history, as after a restart.
                for number in list(self.service.windows_until):
                    self.service.forget_windows(number)
                await asyncio.sleep(RESTART_SECONDS)
            finally:
                self.reader = None
                await reader.stop()

    async def _read(self, reader: AIOKafkaConsumer) -> None:
        while True:
            batch = await reader.getmany(timeout_ms=1000)
            generation = self.generation  # of the assignment the batch was fetched under
            self.service.metrics.windows_lag.set(await consumer_lag(reader))
            async with self.turn:
                if self.generation != generation:
                    # A revocation came between the fetch and the turn: the partitions' next
                    # owners (this worker too, for those given back) read the batch again from
                    # the committed offsets, where aiokafka sets every assigned position.
                    continue
                await self._count(reader, batch)

    async def _count(
        self, reader: AIOKafkaConsumer, batch: dict[TopicPartition, list[Any]]
    ) -> None:
        topic = self.service.segment_topic
        await self._rebuild_quiet(reader, skip={tp for tp, records in batch.items() if records})
        events = [
            cast(EventT, Undelivered(Record(topic, tp.partition, record)))
            for tp, records in batch.items()
            for record in records
        ]
        if not events:
            return
        await self.service.handle_gaps(events)
        self.service.stage_working("windows")
        done = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        try:
            await reader.commit(done)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced without asking this worker first (its session lapsed):
            # the next owner reads the batch again (its windows are rebuilt up to the
            # committed offset, so no window counts it twice; the counters may).
            log.warning("windows offsets not committed (%r): the group rebalanced", exc)

    async def _rebuild_quiet(self, reader: AIOKafkaConsumer, skip: set[TopicPartition]) -> None:
        """Rebuild the windows of each assigned partition that has none and no record in hand,
        up to its position: a partition with nothing new to read (a restart after everything
        was read) must still publish its windows. One with records is rebuilt by `handle_gaps`
        up to its first record."""
        topic = self.service.segment_topic
        for tp in reader.assignment():
            if tp.partition in self.service.windows_until or tp in skip:
                continue
            try:
                position = await reader.position(tp)
            except IllegalStateError:
                continue  # revoked meanwhile
            await self.service.rebuild_windows(topic, tp.partition, position)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: SegmentReader) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.owner.turn:  # the batch under way is counted and committed first
            self.owner.generation += 1
            for tp in revoked:
                self.owner.service.forget_windows(tp.partition)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Windows of a partition gone elsewhere, should any have outlived its revocation.
        held = {tp.partition for tp in assigned}
        for number in set(self.owner.service.windows_until) - held:
            self.owner.service.forget_windows(number)
        reader = self.owner.reader
        if reader is not None:
            await start_where_faust_left(self.owner.service, reader, assigned)

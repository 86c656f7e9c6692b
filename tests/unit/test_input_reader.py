"""The clocks stage's input reader around rebalances, with a stand-in consumer and changelog
(the live tests run it on the broker: two workers, kill -9, faults)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from gapwatch_scorer.input_reader import InputReader
from gapwatch_scorer.item_store import RocksItemStore, item_key
from gapwatch_scorer.settings import ScorerSettings
from tests.scorer_stand_ins import Rec, StandInConsumer
from tests.unit.test_scorer_service import offline_service, opened_at


def reader_of(tmp_path: Path) -> tuple[InputReader, list[tuple[str, bytes, bytes]]]:
    service, produced = offline_service()
    items = RocksItemStore(tmp_path, "items-changelog")
    for number in range(3):
        items._open(number)  # as `recover` leaves them
    input_reader = InputReader(service, items)
    input_reader.assigned = {0, 1, 2}  # recovered: scored from now on
    return input_reader, produced


def batch_of(*events: object) -> dict[TopicPartition, list[object]]:
    out: dict[TopicPartition, list[object]] = {}
    for event in events:
        m = event.message  # type: ignore[attr-defined]
        out.setdefault(TopicPartition(m.topic, m.partition), []).append(m)
    return out


async def test_a_revocation_waits_for_the_batch_under_way_and_commits_its_offsets(
    tmp_path: Path,
):
    """The revocation returns (and the rebalance goes on) only once the batch under way has its
    saves acknowledged, and it commits that batch's offsets: its partitions' next owner starts
    after them and recovers their saves from the changelog."""
    input_reader, _ = reader_of(tmp_path)
    service = input_reader.service
    release = asyncio.Event()
    acked: list[str] = []

    async def send_changelog(
        topic: str, entries: dict[int, list[tuple[bytes, bytes]]]
    ) -> dict[int, int]:
        await release.wait()
        acked.append("acked")
        return dict.fromkeys(entries, 0)

    service.send_changelog = send_changelog  # type: ignore[method-assign]
    a, b = opened_at("A", 0, 4), opened_at("B", 1, 9)
    consumer = StandInConsumer([batch_of(a, b)], fail_first_commit=False)  # type: ignore[list-item]
    input_reader.reader = consumer  # type: ignore[assignment]
    reading = asyncio.create_task(input_reader._read(consumer))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    tps = set(batch_of(a, b))
    revocation = asyncio.create_task(input_reader.revoked(tps))
    await asyncio.sleep(0.05)
    assert not revocation.done() and consumer.commits == []
    release.set()
    await revocation
    assert acked == ["acked"]
    assert consumer.commits == [
        {TopicPartition(a.message.topic, 0): 5, TopicPartition(b.message.topic, 1): 10}
    ]
    assert input_reader.items.get(0, item_key("A")) is not None
    assert input_reader.items.get(1, item_key("B")) is not None
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading


async def test_a_batch_fetched_before_a_revocation_is_not_scored(tmp_path: Path):
    """Fetched, then a revocation began before its turn: its events are read again from the
    committed offsets by whoever holds the partition next, so this worker scores nothing."""
    input_reader, produced = reader_of(tmp_path)
    service = input_reader.service
    a = opened_at("A", 0, 0)
    consumer = StandInConsumer([batch_of(a)], fail_first_commit=False)  # type: ignore[list-item]
    (tp,) = batch_of(a)
    consumer.ends = {tp: None}  # assigned (again) after the rebalance
    input_reader.reader = consumer  # type: ignore[assignment]
    await service.scoring_turn.acquire()  # a restore's adoption holds the turn
    reading = asyncio.create_task(input_reader._read(consumer))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)  # fetched; waits for the turn
    revocation = asyncio.create_task(input_reader.revoked(set(batch_of(a))))
    await asyncio.sleep(0.05)
    service.scoring_turn.release()
    await revocation
    assert produced == [] and consumer.commits == []
    assert service.metrics.events.labels("tickets")._value.get() == 0
    assert input_reader.items.get(0, item_key("A")) is None
    assert consumer.seeks == {tp: 0}  # still held: read again from the batch's first offset
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading


def recovering_in_memory(
    input_reader: InputReader, moved: set[int] = frozenset()
) -> list[set[int]]:  # type: ignore[assignment]
    """Stand in for the changelog recovery (each partition in `moved` gets 2 records); return
    the partitions each recovery was asked for."""
    asked: list[set[int]] = []

    async def recover(settings: ScorerSettings, partitions: set[int]) -> dict[int, int]:
        asked.append(set(partitions))
        for number in partitions:
            input_reader.items._open(number)
        return {number: 2 if number in moved else 0 for number in partitions}

    async def group_committed(wanted: set[tuple[str, int]]) -> dict[tuple[str, int], None]:
        return dict.fromkeys(wanted)  # nothing committed by faust's group either

    input_reader.items.recover = recover  # type: ignore[method-assign,assignment]
    input_reader.service.group_committed = group_committed  # type: ignore[method-assign,assignment]
    input_reader.reader = StandInConsumer([], fail_first_commit=False)  # type: ignore[assignment]
    return asked


def partitions(input_reader: InputReader, *numbers: int) -> set[TopicPartition]:
    return {TopicPartition(t, n) for t in input_reader.topics for n in numbers}


async def test_partitions_revoked_and_not_given_back_are_let_go_the_others_kept(
    tmp_path: Path,
):
    """After a rebalance, a partition given straight back keeps its clocks and database (it had
    no other owner); one that went elsewhere is dropped from memory and closed. Every assigned
    partition is paused in the callback itself (aiokafka sends no heartbeats while it runs),
    caught up with its changelog in the background, and only then read again."""
    input_reader, _ = reader_of(tmp_path)
    service = input_reader.service
    await service.handle_inputs(
        [opened_at("A", 0, 0), opened_at("C", 2, 0)],  # type: ignore[list-item]
        input_reader.items,
    )
    asked = recovering_in_memory(input_reader)
    consumer = input_reader.reader
    await input_reader.revoked(partitions(input_reader, 0, 1, 2))
    assert input_reader.items.held == {0, 1, 2}  # nothing let go before the assignment
    kept = service.clocks[0]
    input_reader.assigned_partitions(partitions(input_reader, 0, 1, 3))
    assert consumer.paused == partitions(input_reader, 0, 1, 3)  # type: ignore[union-attr]
    assert input_reader.assigned == set() and not input_reader.settled
    assert input_reader.recovering is not None
    await input_reader.recovering
    assert consumer.paused == set()  # type: ignore[union-attr]
    assert service.clocks[0] is kept and "A" in kept.scoring.items
    assert 2 not in service.clocks and input_reader.items.held == {0, 1, 3}
    assert asked == [{0, 1, 3}] and input_reader.assigned == {0, 1, 3}


async def test_a_partition_kept_whose_changelog_moved_is_restored_again(tmp_path: Path):
    """Given "straight back", yet its changelog has saves this worker did not write: it was out
    of the group meanwhile and another worker held the partition. Its clocks in memory are
    older than the database: dropped, for the tick to restore them."""
    input_reader, _ = reader_of(tmp_path)
    service = input_reader.service
    await service.handle_inputs([opened_at("A", 0, 0)], input_reader.items)  # type: ignore[list-item]
    recovering_in_memory(input_reader, moved=frozenset({0}))
    await input_reader.revoked(partitions(input_reader, 0, 1, 2))
    input_reader.assigned_partitions(partitions(input_reader, 0, 1, 2))
    assert input_reader.recovering is not None
    await input_reader.recovering
    assert 0 not in service.clocks and 0 not in service.loaded
    assert input_reader.assigned == {0, 1, 2} and input_reader.items.held == {0, 1, 2}


async def test_records_of_a_partition_not_yet_recovered_are_not_scored(tmp_path: Path):
    """aiokafka can hand over a new partition's records before the assignment callback pauses
    it: they wait (the reader seeks back to them) until the partition is recovered."""
    input_reader, _ = reader_of(tmp_path)
    input_reader.assigned = {0}
    a, b = opened_at("A", 0, 0), opened_at("B", 1, 7)
    consumer = StandInConsumer([batch_of(a, b)], fail_first_commit=False)  # type: ignore[list-item]
    consumer.ends = {tp: None for tp in batch_of(a, b)}
    input_reader.reader = consumer  # type: ignore[assignment]
    reading = asyncio.create_task(input_reader._read(consumer))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert input_reader.items.get(0, item_key("A")) is not None
    assert input_reader.items.get(1, item_key("B")) is None
    assert consumer.seeks == {TopicPartition(b.message.topic, 1): 7}
    assert consumer.commits == [{TopicPartition(a.message.topic, 0): 1}]
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading


async def test_a_batch_fetched_after_a_rebalance_that_began_during_its_fetch_is_scored(
    tmp_path: Path,
):
    """The fetch waited through a whole rebalance (an idle input): what it returns belongs to
    the new assignment and is scored (dropping it lost a partition's events in the two-worker
    live test: the consumer's position had moved past them)."""
    input_reader, _ = reader_of(tmp_path)
    a = opened_at("A", 0, 0)

    class RebalancedDuringFetch(StandInConsumer):
        async def getmany(
            self, timeout_ms: int = 0, **_: object
        ) -> dict[TopicPartition, list[Rec]]:
            if self.batches:
                input_reader.generation += 1
            return await super().getmany(timeout_ms)

    consumer = RebalancedDuringFetch([batch_of(a)], fail_first_commit=False)  # type: ignore[list-item]
    input_reader.reader = consumer  # type: ignore[assignment]
    reading = asyncio.create_task(input_reader._read(consumer))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert input_reader.items.get(0, item_key("A")) is not None
    assert consumer.commits == [{TopicPartition(a.message.topic, 0): 1}]
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading

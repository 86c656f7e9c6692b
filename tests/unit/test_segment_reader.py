"""The windows stage's reader and what it shares with the input reader, with a stand-in
consumer (the live tests run them on the broker)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from gapwatch_scorer.app import ScorerService
from gapwatch_scorer.input_reader import consumer_lag, start_where_faust_left
from gapwatch_scorer.segment_reader import SegmentReader, _Rebalance
from gapwatch_scorer.settings import ScorerSettings
from tests.scorer_stand_ins import Rec, StandInConsumer

REPO = Path(__file__).resolve().parents[2]


def service() -> ScorerService:
    settings = ScorerSettings(scorer_policies_file=REPO / "deploy" / "config" / "policies.yaml")
    return ScorerService(settings, CollectorRegistry())


async def test_batches_go_to_the_windows_and_their_offsets_are_committed_after():
    svc = service()
    topic = svc.segment_topic
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    handled: list[list[tuple[str, int, int, bytes | None]]] = []

    async def handle_gaps(events: Any) -> None:
        m = [e.message for e in events]
        handled.append([(x.topic, x.partition, x.offset, x.value) for x in m])

    svc.handle_gaps = handle_gaps  # type: ignore[method-assign]
    batches = [
        {p0: [Rec(5, b"a"), Rec(6, b"b")], p1: [Rec(0, b"c")]},
        {p1: [Rec(1, b"d")]},
    ]
    reader = StandInConsumer(batches, fail_first_commit=True)
    task = asyncio.create_task(SegmentReader(svc)._read(reader))  # type: ignore[arg-type]
    for _ in range(100):
        if reader.commits:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handled == [
        [(topic, 0, 5, b"a"), (topic, 0, 6, b"b"), (topic, 1, 0, b"c")],
        [(topic, 1, 1, b"d")],
    ]
    # The first commit failed (a rebalance): the reader went on; the next one went through.
    assert reader.commits == [{p1: 2}]


async def test_a_partition_new_to_the_group_starts_where_fausts_group_left_it():
    svc = service()
    topic = svc.segment_topic
    p0, p1, p2 = (TopicPartition(topic, n) for n in range(3))

    async def group_committed(wanted: set[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        assert wanted == {(topic, 1), (topic, 2)}  # p0 has a commit of its own
        return {(topic, 1): 40, (topic, 2): None}

    svc.group_committed = group_committed  # type: ignore[method-assign]
    reader = StandInConsumer([], fail_first_commit=False)
    reader.own[p0] = 7
    await start_where_faust_left(svc, reader, {p0, p1, p2})  # type: ignore[arg-type]
    assert reader.seeks == {p1: 40}  # p2: never committed anywhere, the reset policy applies


async def test_the_lag_is_summed_from_each_assigned_partitions_end_and_position():
    svc = service()
    topic = svc.segment_topic
    p0, p1, p2 = (TopicPartition(topic, n) for n in range(3))
    reader = StandInConsumer([], fail_first_commit=False)
    reader.ends = {p0: 120, p1: 7, p2: None}  # p2 not fetched yet
    reader.positions = {p0: 100, p1: 7, p2: 0}
    assert await consumer_lag(reader) == 20  # type: ignore[arg-type]


async def test_a_revocation_waits_for_the_batch_under_way_to_be_counted_and_committed():
    """A batch counted here and then read again by the partition's next owner would count
    twice in the Prometheus counters (summed across workers): the revocation waits for it."""
    svc = service()
    topic = svc.segment_topic
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    segments = SegmentReader(svc)
    reader = StandInConsumer([{p0: [Rec(3, b"a")], p1: [Rec(8, b"b")]}], fail_first_commit=False)
    reader.ends = reader.positions = {p0: 4, p1: 9}
    segments.reader = reader  # type: ignore[assignment]
    order: list[str] = []
    revoking: list[asyncio.Task[None]] = []

    async def handle_gaps(events: Any) -> None:
        # The revocation arrives while the batch is counted (a rebuild can take seconds).
        revoking.append(asyncio.create_task(_Rebalance(segments).on_partitions_revoked({p0})))
        await asyncio.sleep(0.02)
        for event in events:
            svc.windows_until[event.message.partition] = event.message.offset + 1
        order.append("counted")

    svc.handle_gaps = handle_gaps  # type: ignore[method-assign]
    task = asyncio.create_task(segments._read(reader))  # type: ignore[arg-type]
    for _ in range(100):
        if revoking and revoking[0].done():
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert order == ["counted"] and revoking[0].done()
    assert reader.commits == [{p0: 4, p1: 9}]  # committed before the revocation went on
    assert set(svc.windows_until) == {1}  # then p0's windows were let go
    await _Rebalance(segments).on_partitions_assigned(set())  # nothing assigned at all now
    assert svc.windows_until == {}


async def test_a_batch_fetched_before_a_revocation_is_left_to_the_next_owner():
    svc = service()
    topic = svc.segment_topic
    p0 = TopicPartition(topic, 0)
    segments = SegmentReader(svc)
    reader = StandInConsumer([{p0: [Rec(3, b"a")]}], fail_first_commit=False)
    reader.ends = reader.positions = {p0: 4}
    handled: list[Any] = []

    async def handle_gaps(events: Any) -> None:
        handled.extend(events)

    svc.handle_gaps = handle_gaps  # type: ignore[method-assign]
    async with segments.turn:  # the reader fetches, then waits for its turn
        task = asyncio.create_task(segments._read(reader))  # type: ignore[arg-type]
        await asyncio.sleep(0.02)
        segments.generation += 1  # meanwhile a revocation went through
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handled == [] and reader.commits == []


async def test_a_partition_with_nothing_new_to_read_still_gets_its_windows_rebuilt():
    """A restart after everything was read: no record will arrive to trigger the rebuild, yet
    the windows (and their snapshots) must come back, up to where reading would start."""
    svc = service()
    topic = svc.segment_topic
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    rebuilt: list[tuple[int, int]] = []

    async def rebuild_windows(topic_: str, number: int, until: int) -> None:
        rebuilt.append((number, until))
        svc.windows_until[number] = until

    async def handle_gaps(events: Any) -> None:
        for event in events:  # as the real one: rebuilt up to the first, then counted
            svc.windows_until[event.message.partition] = event.message.offset + 1

    svc.rebuild_windows = rebuild_windows  # type: ignore[method-assign]
    svc.handle_gaps = handle_gaps  # type: ignore[method-assign]
    reader = StandInConsumer([{p1: [Rec(4, b"x")]}, {}], fail_first_commit=False)
    reader.ends = {p0: 50, p1: 50}
    reader.positions = {p0: 42, p1: 5}
    task = asyncio.create_task(SegmentReader(svc)._read(reader))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rebuilt == [(0, 42)]  # p1 had a record in hand: `handle_gaps` rebuilds it

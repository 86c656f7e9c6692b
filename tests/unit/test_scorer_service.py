"""The scorer service's batch handling around a rebalance, without a broker (the producer is a
stand-in that lets a rebalance happen while the batch's acks are awaited)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from gapwatch.core.examples import EXAMPLES
from gapwatch.core.topics import Stream, topic_name
from gapwatch_scorer.app import ScorerService
from gapwatch_scorer.settings import ScorerSettings
from tests.scorer_stand_ins import MemoryItemStore, acknowledge_changelog_at_once

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp: float = 0.0


@dataclass(eq=False)
class Event:
    message: Message


def offline_service() -> tuple[ScorerService, list[tuple[str, bytes, bytes]]]:
    """A service whose output and committed offsets are stand-ins (no broker): what it
    produces is collected, and nothing was committed (delivery starts at offset 0)."""
    settings = ScorerSettings(scorer_policies_file=REPO / "deploy" / "config" / "policies.yaml")
    service = ScorerService(settings, CollectorRegistry())
    acknowledge_changelog_at_once(service)
    produced: list[tuple[str, bytes, bytes]] = []

    async def produce(records: Sequence[tuple[str, bytes, bytes]]) -> None:
        produced.extend(records)

    async def committed(wanted: set[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        return dict.fromkeys(wanted)

    service.produce = produce  # type: ignore[method-assign]
    service.committed = committed  # type: ignore[method-assign]
    return service, produced


def opened(item: str, partition: int) -> Event:
    doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    doc.update(id=f"{item}-opened", subject=item)
    doc["data"]["ticket_id"] = item
    topic = topic_name(Stream.TICKETS, "")
    return Event(Message(topic, partition, 0, item.encode(), orjson.dumps(doc)))


@pytest.mark.parametrize(
    ("rebalance", "written"),
    [
        (None, {"A", "B"}),
        ("revoked", {"A"}),  # partition 1 revoked, not yet assigned anywhere
        ("given back", {"A", "B"}),  # revoked and assigned straight back: still the owner
        ("moved", {"A"}),  # revoked and assigned to another worker
    ],
)
async def test_items_of_a_partition_revoked_during_a_batch_are_not_written(
    rebalance: str | None, written: set[str]
):
    service, produced = offline_service()

    async def produce(records: Sequence[tuple[str, bytes, bytes]]) -> None:
        produced.extend(records)
        if rebalance is not None:  # what the faust revoke / assign signals do meanwhile
            service.revoked_inputs.add(1)
        if rebalance == "given back":
            service.reassign_inputs({0, 1})
        elif rebalance == "moved":
            service.reassign_inputs({0})

    service.produce = produce  # type: ignore[method-assign]
    table = MemoryItemStore()
    await service.handle_inputs([opened("A", 0), opened("B", 1)], table)  # type: ignore[arg-type]
    assert set(table.by_id) == written
    assert not [r for r in produced if r[0].endswith("deadletter.v1")], produced
    # Scoring itself happened either way; only the state writes of the lost partition are left
    # for its next owner, which reads the batch's events again.
    assert service.metrics.events.labels("tickets")._value.get() == 2


def opened_at(item: str, partition: int, offset: int) -> Event:
    event = opened(item, partition)
    event.message.offset = offset
    return event


async def test_records_the_consumer_skipped_are_read_directly_and_scored():
    settings = ScorerSettings(scorer_policies_file=REPO / "deploy" / "config" / "policies.yaml")
    service = ScorerService(settings, CollectorRegistry())
    acknowledge_changelog_at_once(service)
    topic = topic_name(Stream.TICKETS, "")
    log = {offset: opened_at(f"T-{offset}", 0, offset) for offset in range(20)}
    reads: list[tuple[int, int]] = []

    async def read_range(topic_: str, number: int, start: int, end: int) -> list[Event]:
        assert (topic_, number) == (topic, 0)
        reads.append((start, end))
        return [log[offset] for offset in range(start, end)]

    async def produce(records: Sequence[tuple[str, bytes, bytes]]) -> None:
        pass

    service._read_range = read_range  # type: ignore[method-assign,assignment]
    service.produce = produce  # type: ignore[method-assign]

    async def committed(wanted: set[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        return dict.fromkeys(wanted, 2)  # delivery resumes at offset 2

    service.committed = committed  # type: ignore[method-assign]
    table = MemoryItemStore()

    async def batch(*offsets: int) -> None:
        await service.handle_inputs([log[o] for o in offsets], table)  # type: ignore[misc]

    await batch(2, 3)  # from the committed offset: nothing skipped
    await batch(4, 7, 8)  # 5 and 6 skipped within a batch
    await batch(12)  # 9 to 11 skipped between batches
    await batch(12, 13)  # 12 delivered twice: nothing to read
    assert reads == [(5, 7), (9, 12)]
    assert set(table.by_id) == {f"T-{o}" for o in range(2, 14)}
    assert service.metrics.undelivered._value.get() == 5


async def test_a_partition_first_delivered_past_its_committed_offset_is_read_from_there():
    settings = ScorerSettings(scorer_policies_file=REPO / "deploy" / "config" / "policies.yaml")
    service = ScorerService(settings, CollectorRegistry())
    acknowledge_changelog_at_once(service)
    reads: list[tuple[int, int]] = []

    async def read_range(topic_: str, number: int, start: int, end: int) -> list[Event]:
        reads.append((start, end))
        return [opened_at(f"T-{o}", number, o) for o in range(start, end)]

    async def produce(records: Sequence[tuple[str, bytes, bytes]]) -> None:
        pass

    service._read_range = read_range  # type: ignore[method-assign,assignment]
    service.produce = produce  # type: ignore[method-assign]

    async def committed(wanted: set[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        return dict.fromkeys(wanted)  # never committed: delivery starts at 0

    service.committed = committed  # type: ignore[method-assign]
    table = MemoryItemStore()
    await service.handle_inputs([opened_at("T-2", 1, 2)], table)  # type: ignore[list-item]
    assert reads == [(0, 2)]
    assert set(table.by_id) == {"T-0", "T-1", "T-2"}


async def test_an_event_of_an_item_whose_saved_state_is_unreadable_is_dead_lettered_as_such():
    """A restored clock with an unreadable log refuses its event as `state_unreadable` (it was
    `internal_error`), and a timer that meets it does not take another item's event down."""
    from gapwatch.core.clock import ItemClock

    service, produced = offline_service()
    table = MemoryItemStore()
    await service.handle_inputs([opened_at("T-1", 0, 0)], table)  # type: ignore[list-item]
    original = table.by_id["T-1"]
    saved = original.replace(b'"log":[', b'"log":[[1],', 1)
    service, produced = offline_service()
    scoring = service.partition(0).scoring
    scoring.adopt(ItemClock.restore("T-1", service.config.clock, saved))
    reply = copy.deepcopy(EXAMPLES["gapwatch.ticket.replied.v1"])
    reply.update(id="T-1-replied", subject="T-1")
    reply["data"]["ticket_id"] = "T-1"
    topic = topic_name(Stream.TICKETS, "")
    event = Event(Message(topic, 0, 0, b"T-1", orjson.dumps(reply)))
    await service.handle_inputs([event], table)  # type: ignore[list-item]
    letters = [orjson.loads(v) for t, _, v in produced if t.endswith("deadletter.v1")]
    assert [(d["reason"], d["offset"]) for d in letters] == [("state_unreadable", 0)]
    assert "T-1" in letters[0]["detail"]
    assert scoring.items["T-1"].resting and table.by_id["T-1"] == original  # no blank clock saved
    assert service.metrics.dead_letters.labels("state_unreadable")._value.get() == 1


async def test_resume_points_read_at_the_assignment_serve_each_partitions_first_batch():
    service, _ = offline_service()
    topic = topic_name(Stream.TICKETS, "")
    asked: list[set[tuple[str, int]]] = []

    async def committed(wanted: set[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        asked.append(set(wanted))
        return dict.fromkeys(wanted, 3)

    reads: list[tuple[int, int, int]] = []

    async def read_range(topic_: str, number: int, start: int, end: int) -> list[Event]:
        reads.append((number, start, end))
        return [opened_at(f"T-{number}-{o}", number, o) for o in range(start, end)]

    service.committed = committed  # type: ignore[method-assign]
    service._read_range = read_range  # type: ignore[method-assign,assignment]
    both = {(topic, 0), (topic, 1)}
    service.reassign_inputs({0, 1})
    await service.note_resume_points(both)
    assert asked == [both]
    table = MemoryItemStore()
    batch = [opened_at("T-0-3", 0, 3), opened_at("T-1-5", 1, 5)]
    await service.handle_inputs(batch, table)  # type: ignore[arg-type]
    assert asked == [both]  # the first batch did not ask again
    assert reads == [(1, 3, 5)]  # partition 1 was first delivered past its resume point
    assert set(table.by_id) == {"T-0-3", "T-1-3", "T-1-4", "T-1-5"}
    # Partition 1 revoked and given straight back: its resume point is read again, and only its.
    service.revoked_inputs.add(1)
    service.reassign_inputs({0, 1})
    await service.note_resume_points(both)
    assert asked[-1] == {(topic, 1)}


async def test_a_partition_stalled_short_of_its_end_is_read_directly(
    monkeypatch: pytest.MonkeyPatch,
):
    """Records faust left undelivered at a partition's end, with nothing after them, are read
    once the partition has had no delivery for STALLED_SECONDS, and scored."""
    import gapwatch_scorer.app as app_module

    service, _ = offline_service()
    topic = topic_name(Stream.TICKETS, "")
    reads: list[tuple[int, int, int]] = []

    async def read_range(topic_: str, number: int, start: int, end: int) -> list[Event]:
        reads.append((number, start, end))
        return [opened_at(f"T-{number}-{o}", number, o) for o in range(start, end)]

    service._read_range = read_range  # type: ignore[method-assign,assignment]
    clock = [1000.0]
    monkeypatch.setattr(app_module.time, "monotonic", lambda: clock[0])
    table = MemoryItemStore()
    await service.handle_inputs([opened_at("T-0-0", 0, 0)], table)  # type: ignore[list-item]
    ends = {(topic, 0): 3, (topic, 1): 2}  # partition 1: assigned, never delivered, at 0
    service.resume_at[topic, 1] = 0
    await service.read_stalled(ends, table)  # type: ignore[arg-type]
    clock[0] += app_module.STALLED_SECONDS - 1
    await service.read_stalled(ends, table)  # type: ignore[arg-type]
    assert reads == []  # not stalled yet: faust may still deliver them
    clock[0] += 1
    async with service.scoring_turn:  # a batch under way: nothing is judged stalled
        await service.read_stalled(ends, table)  # type: ignore[arg-type]
    assert reads == []
    await service.read_stalled(ends, table)  # type: ignore[arg-type]
    assert sorted(reads) == [(0, 1, 3), (1, 0, 2)]
    assert set(table.by_id) == {"T-0-0", "T-0-1", "T-0-2", "T-1-0", "T-1-1"}
    clock[0] += app_module.STALLED_SECONDS
    await service.read_stalled(ends, table)  # type: ignore[arg-type]
    assert len(reads) == 2  # at their ends now: nothing more to read
    assert service.metrics.undelivered._value.get() == 4

    # A batch held up for longer than a stall (a broker away while its acks are retried):
    # nothing could be delivered meanwhile, so that time does not count as a stall.
    async def slow_produce(records: Sequence[tuple[str, bytes, bytes]]) -> None:
        clock[0] += 2 * app_module.STALLED_SECONDS

    quick_produce = service.produce
    service.produce = slow_produce  # type: ignore[method-assign]
    await service.handle_inputs([opened_at("T-0-3", 0, 3)], table)  # type: ignore[list-item]
    service.produce = quick_produce  # type: ignore[method-assign]
    await service.read_stalled({(topic, 0): 6, (topic, 1): 4}, table)  # type: ignore[arg-type]
    assert len(reads) == 2
    clock[0] += app_module.STALLED_SECONDS
    await service.read_stalled({(topic, 0): 6, (topic, 1): 4}, table)  # type: ignore[arg-type]
    assert sorted(reads[2:]) == [(0, 4, 6), (1, 2, 4)]

    # A rebalance while the records are read: they are left to the partition's owner.
    async def read_during_a_rebalance(
        topic_: str, number: int, start: int, end: int
    ) -> list[Event]:
        service.rebalances += 1  # what the revoke signal does meanwhile
        return await read_range(topic_, number, start, end)

    service._read_range = read_during_a_rebalance  # type: ignore[method-assign,assignment]
    clock[0] += app_module.STALLED_SECONDS
    await service.read_stalled({(topic, 0): 8}, table)  # type: ignore[arg-type]
    assert reads[-1] == (0, 6, 8) and "T-0-6" not in table.by_id


@pytest.mark.parametrize("item", ["T-1", "Tö-ü 1", 'with "quotes"', "日本-7", "tab\there"])
def test_item_keys_are_the_bytes_fausts_table_codecs_write(item: str):
    """The scorer writes its items table's keys and values itself (`TableItemStore`): they must
    be the bytes faust's own table codecs write and read, or a restore would miss them."""
    import faust

    from gapwatch_scorer.item_store import item_key

    app = faust.App("codec-check", store="memory://")
    table = app.Table("items", key_type=str, value_type=bytes, partitions=6)
    assert item_key(item) == app.serializers.dumps_key(str, item, serializer=table.key_serializer)
    assert app.serializers.loads_key(str, item_key(item), serializer=table.key_serializer) == item
    value = b'{"v":1}'
    assert app.serializers.dumps_value(bytes, value, serializer=table.value_serializer) == value


async def test_a_revocation_waits_for_a_save_under_way():
    """A revocation returns (and the rebalance goes on) only once a save under way has its
    changelog acks: the partition's next owner recovers from the changelog."""
    service, _ = offline_service()
    release = asyncio.Event()
    order: list[str] = []

    async def send_changelog(
        topic: str, entries: dict[int, list[tuple[bytes, bytes]]]
    ) -> dict[int, int]:
        await release.wait()
        order.append("acked")
        return dict.fromkeys(entries, 0)

    service.send_changelog = send_changelog  # type: ignore[method-assign]
    table = MemoryItemStore()
    batch = asyncio.create_task(service.handle_inputs([opened("A", 0)], table))  # type: ignore[list-item]

    async def revocation() -> None:
        await service.revoke_inputs({0})
        order.append("revoked")

    await asyncio.sleep(0.01)
    revoked = asyncio.create_task(revocation())
    await asyncio.sleep(0.01)
    assert order == [] and not revoked.done()
    release.set()
    await asyncio.gather(batch, revoked)
    assert order == ["acked", "revoked"] and set(table.by_id) == {"A"}


async def test_a_restore_that_ends_after_the_first_events_fires_the_timers_they_passed():
    """A restarted worker scores events before its restore (in the tick timer) reaches every
    saved item: T-2's event, a day after T-1 opened, passes T-1's deadlines while T-1 is not
    yet in memory. The restore then publishes what the original worker published for T-1 at
    that event; with no later event (and no wall clock) nothing else would (it lost at-risk
    and breach events in the kill -9 live test, 2 of 4 runs with 5 ms batches)."""
    first = opened_at("T-1", 0, 0)
    doc = orjson.loads(first.message.value)
    later = datetime.fromisoformat(doc["data"]["opened_at"]) + timedelta(days=1)
    doc.update(id="T-2-opened", subject="T-2", time=later.isoformat())
    doc["data"].update(ticket_id="T-2", opened_at=later.isoformat())
    second = Event(Message(first.message.topic, 0, 1, b"T-2", orjson.dumps(doc)))

    def of_t1(records: list[tuple[str, bytes, bytes]]) -> list[bytes]:
        gaps = [v for t, k, v in records if t.endswith("gaps.v1") and k == b"T-1"]
        return sorted(gaps)

    original, original_out = offline_service()
    table = MemoryItemStore()
    await original.handle_inputs([first], table)  # type: ignore[list-item]
    opened_out = of_t1(original_out)
    await original.handle_inputs([second], table)  # type: ignore[list-item]
    want = sorted(set(of_t1(original_out)) - set(opened_out))
    outcomes = {orjson.loads(v)["data"]["outcome"] for v in want}
    assert {"at_risk", "breached"} <= outcomes

    restarted, produced = offline_service()

    async def committed(wanted: set[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        return dict.fromkeys(wanted, 1)  # the original committed T-1's offset

    restarted.committed = committed  # type: ignore[method-assign]
    await restarted.handle_inputs([second], table)  # type: ignore[list-item]
    assert of_t1(produced) == []  # T-1 was not in memory yet
    await restarted.load_assigned({0}, table)
    assert of_t1(produced) == want

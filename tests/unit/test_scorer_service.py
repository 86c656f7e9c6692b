"""The scorer service's batch handling and restore, without a broker (the producer and the
changelog are stand-ins)."""

from __future__ import annotations

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
    """A service whose output is a stand-in (no broker): what it produces is collected."""
    settings = ScorerSettings(scorer_policies_file=REPO / "deploy" / "config" / "policies.yaml")
    service = ScorerService(settings, CollectorRegistry())
    acknowledge_changelog_at_once(service)
    produced: list[tuple[str, bytes, bytes]] = []

    async def produce(records: Sequence[tuple[str, bytes, bytes]]) -> None:
        produced.extend(records)

    service.produce = produce  # type: ignore[method-assign]
    return service, produced


def opened(item: str, partition: int) -> Event:
    doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    doc.update(id=f"{item}-opened", subject=item)
    doc["data"]["ticket_id"] = item
    topic = topic_name(Stream.TICKETS, "")
    return Event(Message(topic, partition, 0, item.encode(), orjson.dumps(doc)))


def opened_at(item: str, partition: int, offset: int) -> Event:
    event = opened(item, partition)
    event.message.offset = offset
    return event


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
    letters = [orjson.loads(r[2]) for r in produced if r[0].endswith("deadletter.v1")]
    assert [(d["reason"], d["offset"]) for d in letters] == [("state_unreadable", 0)]
    assert "T-1" in letters[0]["detail"]
    assert scoring.items["T-1"].resting and table.by_id["T-1"] == original  # no blank clock saved
    assert service.metrics.dead_letters.labels("state_unreadable")._value.get() == 1


@pytest.mark.parametrize("item", ["T-1", "Tö-ü 1", 'with "quotes"', "日本-7", "tab\there"])
def test_item_keys_are_the_bytes_fausts_table_codecs_write(item: str):
    """The items changelog was faust's `items` table's until 2026-11-24: the keys and values
    the scorer writes must stay the bytes faust's table codecs wrote, or a worker upgraded from
    it would not find the items saved before (and one rolled back would not find the new)."""
    import faust

    from gapwatch_scorer.item_store import item_key

    app = faust.App("codec-check", store="memory://")
    table = app.Table("items", key_type=str, value_type=bytes, partitions=6)
    assert item_key(item) == app.serializers.dumps_key(str, item, serializer=table.key_serializer)
    assert app.serializers.loads_key(str, item_key(item), serializer=table.key_serializer) == item
    value = b'{"v":1}'
    assert app.serializers.dumps_value(bytes, value, serializer=table.value_serializer) == value


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
    doc["data"].update(ticket_id="T-2", opened_at=later.isoformat(), promises=[])
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
    await restarted.handle_inputs([second], table)  # type: ignore[list-item]
    assert of_t1(produced) == []  # T-1 was not in memory yet
    await restarted.load_assigned({0}, table)
    assert of_t1(produced) == want


async def test_open_count_gauges_are_replaced_series_by_series_never_cleared():
    """`/metrics` renders in a thread: a gauge cleared and refilled could be scraped half
    empty. Each export sets the series it has and removes only those that are gone."""
    service, _ = offline_service()
    items = MemoryItemStore()
    first, second = opened("A-1", 0), opened("B-1", 1)
    doc = orjson.loads(second.message.value)
    doc["data"]["team"] = "support"
    second.message.value = orjson.dumps(doc)
    await service.handle_inputs([first, second], items)  # type: ignore[list-item]

    def refuse() -> None:
        raise AssertionError("cleared")

    service.metrics.open.clear = refuse  # type: ignore[method-assign]

    def teams() -> dict[str, float]:
        found: dict[str, float] = {}
        for metric in service.registry.collect():
            for sample in metric.samples:
                if sample.name == "gapwatch_open_promises" and sample.labels["state"] == "open":
                    team = sample.labels["team"]
                    found[team] = found.get(team, 0) + sample.value
        return found

    await service.export_open_counts()
    assert teams() == {"billing": 2, "support": 2}  # first response and resolution each
    service.clocks.pop(1)  # partition 1 let go: its segment's series go with it
    await service.export_open_counts()
    assert teams() == {"billing": 2}
    assert service.events_scored == 2


def test_the_segment_cap_bounds_the_process_not_each_partition():
    """Issue 27 #3: each input partition's engine built its own keyer, so with cap 500 and 6
    partitions 3,003 teams reached gapwatch_open_promises, and a team could be named in one
    partition and `other` in another. Every partition now shares the service's keyer."""
    service, _ = offline_service()
    keyers = {id(service.partition(n).scoring.keyer) for n in range(6)}
    assert keyers == {id(service.keyer)}
    cap = service.keyer.cap
    segments = [{"team": f"team-{i}"} for i in range(cap + 10)]
    for n, segment in enumerate(segments):  # spread over the partitions' engines
        keyer = service.partition(n % 6).scoring.keyer
        assert keyer is not None
        keyer.key(segment)
    assert len(service.keyer.admitted) == cap
    late = service.partition(5).scoring.keyer
    assert late is not None and late.key(segments[-1]) == service.keyer.other

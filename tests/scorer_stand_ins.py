"""Stand-ins for the scorer service's broker-side parts, for tests that drive its batches
directly: an in-memory item store, a changelog that acknowledges at once, and a consumer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from gapwatch_scorer.app import ScorerService


class MemoryItemStore:
    """The items table as one dict per partition; `by_id` shows every saved clock by item id."""

    changelog_topic = "items-changelog"

    def __init__(self) -> None:
        self.partitions: dict[int, dict[bytes, bytes]] = {}
        self.persisted: dict[int, int] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.partitions.get(partition, {}).get(key)

    def write(self, partition: int, entries: Sequence[tuple[bytes, bytes]], offset: int) -> bool:
        self.partitions.setdefault(partition, {}).update(entries)
        self.persisted[partition] = offset
        return True

    def saved(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        yield from self.partitions.get(partition, {}).items()

    @property
    def by_id(self) -> dict[str, bytes]:
        return {
            orjson.loads(key): value
            for saved in self.partitions.values()
            for key, value in saved.items()
        }


def acknowledge_changelog_at_once(service: ScorerService) -> list[tuple[int, bytes, bytes]]:
    """Make the service's changelog sends succeed without a broker; return what was sent, as
    (partition, key, value), each partition's offsets counting from 0."""
    sent: list[tuple[int, bytes, bytes]] = []

    async def send_changelog(
        topic: str, entries: dict[int, list[tuple[bytes, bytes]]]
    ) -> dict[int, int]:
        newest = {}
        for number, records in entries.items():
            sent.extend((number, key, value) for key, value in records)
            newest[number] = sum(1 for s in sent if s[0] == number) - 1
        return newest

    service.send_changelog = send_changelog  # type: ignore[method-assign]
    return sent


@dataclass
class Rec:
    offset: int
    value: bytes
    key: bytes = b"team=t1"
    timestamp: int = 0


class StandInConsumer:
    """Hands out the given batches, then blocks; records commits (the first one may fail)."""

    def __init__(self, batches: list[dict[TopicPartition, list[Rec]]], fail_first_commit: bool):
        self.batches = batches
        self.commits: list[dict[TopicPartition, int]] = []
        self.fail_first_commit = fail_first_commit
        self.own: dict[TopicPartition, int | None] = {}
        self.seeks: dict[TopicPartition, int] = {}
        self.ends: dict[TopicPartition, int | None] = {}
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)

    async def getmany(self, timeout_ms: int = 0, **_: object) -> dict[TopicPartition, list[Rec]]:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(3600)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.fail_first_commit:
            self.fail_first_commit = False
            raise CommitFailedError("rebalanced")
        self.commits.append(offsets)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.own.get(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp] = offset

    def assignment(self) -> set[TopicPartition]:
        return set(self.ends)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends[tp]

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

"""Stand-ins for the scorer service's broker-side parts, for tests that drive its batches
directly: an in-memory item store and a changelog that acknowledges at once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import orjson

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

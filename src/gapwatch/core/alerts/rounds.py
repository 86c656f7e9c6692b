"""Snapshot records read behind the live edge, handed back round by round in event time.

The alerter judges the newest figures it holds. Live, each snapshot round is judged soon after
it arrives. After a restart (or whenever it falls behind), a fetch brings many rounds at once:
applying them all and judging once would judge only the last one, so an incident that began and
ended while the alerter was down would never page, and `for` / `hold` would be measured in the
alerter's catch-up time instead of the scorer's event time.

So records read behind the live edge wait here, and come out in `as_of` order, one round at a
time, where a round is the records whose `as_of` lies within `step` seconds of its first one. A
round is handed out only once every partition still being read has reached past it: the scores
topic is keyed by segment, so partitions are read at different speeds, and judging a round
before a slower partition has delivered its share of it would judge stale figures there.
Partitions read far ahead of the slowest (`ahead` seconds) are to be paused, which bounds what
waits here to about `ahead` seconds of snapshots.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Round(Generic[T]):
    """Records to apply, oldest first, then judge at `as_of` (the newest record's time)."""

    records: list[T]
    as_of: float
    last: bool  # nothing else is waiting: the reader is caught up, or this is all it has


@dataclass(slots=True)
class Rounds(Generic[T]):
    """Waiting snapshot records, per `step` seconds of event time; see the module docstring."""

    step: float
    ahead: float
    _heap: list[tuple[float, int, int, T]] = field(default_factory=list)
    newest: dict[int, float] = field(default_factory=dict)  # newest as_of read, per partition

    def add(self, partition: int, offset: int, as_of: float, record: T) -> None:
        heapq.heappush(self._heap, (as_of, partition, offset, record))
        if as_of > self.newest.get(partition, -math.inf):
            self.newest[partition] = as_of

    def __len__(self) -> int:
        return len(self._heap)

    def watermark(self, behind: Iterable[int]) -> float:
        """The event time every partition in `behind` (not yet read to its end) has reached."""
        return min((self.newest.get(p, -math.inf) for p in behind), default=math.inf)

    def to_pause(self, behind: Iterable[int], partitions: Iterable[int]) -> set[int]:
        """Partitions read more than `ahead` seconds past the slowest one still behind.

        Only partitions that have delivered something set the pace: one not heard from yet
        (its first fetch still on its way) would otherwise pause every other one.
        """
        newest = self.newest
        slowest = min((newest[p] for p in behind if p in newest), default=math.inf)
        return {p for p in partitions if newest.get(p, -math.inf) > slowest + self.ahead}

    def take(self, behind: Iterable[int]) -> Iterator[Round[T]]:
        """Every round that all partitions in `behind` have read past, oldest first.

        With nothing behind, everything waiting comes out; the final round says `last`.
        """
        watermark = self.watermark(behind)
        heap = self._heap
        while heap:
            first = heap[0][0]
            end = first + self.step
            if end > watermark and watermark != math.inf:
                return
            records: list[T] = []
            as_of = first
            while heap and heap[0][0] < end:
                as_of, _, _, record = heapq.heappop(heap)
                records.append(record)
            yield Round(records, as_of, last=not heap)

    def unapplied(self) -> dict[int, int]:
        """Per partition, the lowest offset still waiting: where a restart must read from."""
        lowest: dict[int, int] = {}
        for _, partition, offset, _ in self._heap:
            if offset < lowest.get(partition, offset + 1):
                lowest[partition] = offset
        return lowest

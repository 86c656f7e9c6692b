"""Where the scorer keeps each item's saved clock: the `items` table's RocksDB, one per input
partition, and its changelog topic — written in batches, beside faust's per-key table path.

faust's table writes a changelog record per `table[key] = value` through its producer buffer
(a future and a callback per key, flushed on its own schedule), and profiling showed that path
at about a fifth of a worker's main thread. The scorer saves each touched item once per batch
anyway, so it writes the same records itself: the batch's changelog records are sent and their
acks awaited (`ScorerService.save`), then the values go into the partition's RocksDB with the
newest changelog offset as the partition's persisted offset, as faust's `_on_changelog_sent`
would set it. faust still owns the table's lifecycle: opening each partition's database at
assignment, and recovering it from the changelog (from the persisted offset on) at start-up
and after a rebalance — which also replays anything acknowledged on the changelog but not yet
put locally when a worker died.

Keys are the item ids JSON-encoded, as faust's key codec writes them (it uses orjson too);
values are the clocks' saved bytes, unencoded (the table's raw value type).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import faust
import orjson
from faust.types import TP


def item_key(item_id: str) -> bytes:
    """The table's key for an item: its id as faust's JSON key codec encodes it."""
    return orjson.dumps(item_id)


class ItemStore(Protocol):
    """What the scorer needs of its item storage (a faust table, or a stand-in in tests)."""

    changelog_topic: str

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def write(self, partition: int, entries: Sequence[tuple[bytes, bytes]], offset: int) -> bool:
        """Put these (key, value) entries, acknowledged on the changelog up to `offset`.

        False when this worker no longer holds the partition's database (faust let it go in a
        rebalance): the entries are on the changelog, which the next holder recovers from.
        """
        ...

    def saved(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) saved in one partition, undecoded."""
        ...


class TableItemStore:
    """The faust `items` table's RocksDB store, read and written per partition directly."""

    def __init__(self, table: faust.Table) -> None:
        self.table = table
        self.changelog_topic: str = table.changelog_topic.get_topic_name()

    @property
    def _store(self) -> Any:
        return self.table.data  # faust's RocksDB `Store`: one database per partition

    def get(self, partition: int, key: bytes) -> bytes | None:
        value: bytes | None = self._store._db_for_partition(partition).get(key)
        return value

    def write(self, partition: int, entries: Sequence[tuple[bytes, bytes]], offset: int) -> bool:
        store = self._store
        # `_dbs` holds the databases of the partitions faust has assigned; one it popped at a
        # revocation must not be reopened here (faust reopens and recovers it if it comes back).
        db = store._dbs.get(partition)
        if db is None:
            return False
        for key, value in entries:
            db.put(key, value)
        store.set_persisted_offset(TP(self.changelog_topic, partition), offset)
        return True

    def saved(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        # faust's own iteration covers every partition and decodes each value with its codec;
        # a restore needs one partition and parses the value itself (`ItemClock.restore`).
        store = self._store
        yield from store._visible_items(store._db_for_partition(partition))

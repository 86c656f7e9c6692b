"""Where the scorer keeps each item's saved clock: one RocksDB per input partition, and the items
changelog topic (compacted) that any worker recovers a partition's database from.

A batch's saves go to the changelog first, acks awaited (`ScorerService.save`), then into the
partition's database in one atomic write together with the newest changelog offset written:
the database's *persisted offset*. A partition assigned to this worker is recovered
(`recover`) from its persisted offset on, before any of its input is scored, so it holds every
save acknowledged on the changelog, by this worker before a crash or by another worker while it
held the partition.

This is what faust's `items` table did, and the topic is the table's changelog (same name), so
saved state carries over from the faust-table scorer: a worker that has no database of its own
yet recovers the whole partition from the changelog once.

Keys are the item ids JSON-encoded (as faust's key codec wrote them); values are the clocks'
saved bytes (`ItemClock.to_bytes`). The persisted offset sits under a key no JSON string can
have.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import orjson
from aiokafka import TopicPartition
from rocksdict import Options, Rdict, WriteBatch

from gapwatch.kafka.clients import consumer
from gapwatch.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)

PERSISTED_OFFSET_KEY = b"\x00changelog-offset"
"""The database key of its persisted offset (item keys are JSON strings: they begin with `"`)."""
RECOVERY_FETCH_RECORDS = 10_000


def item_key(item_id: str) -> bytes:
    """The database and changelog key of an item: its id as faust's JSON key codec encoded it."""
    return orjson.dumps(item_id)


class ItemStore(Protocol):
    """What the scorer needs of its item storage (`RocksItemStore`, or a stand-in in tests)."""

    changelog_topic: str

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def write(self, partition: int, entries: Sequence[tuple[bytes, bytes]], offset: int) -> bool:
        """Put these (key, value) entries, acknowledged on the changelog up to `offset`.

        False when this worker no longer holds the partition's database (a rebalance let it
        go): the entries are on the changelog, which the next holder recovers from.
        """
        ...

    def saved(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) saved in one partition, undecoded."""
        ...


class PartitionNotHeld(LookupError):
    """An item of an input partition whose database this worker has not opened was asked for."""


class RocksItemStore:
    """The databases of the input partitions this worker holds, under `directory`."""

    def __init__(self, directory: Path, changelog_topic: str) -> None:
        self.directory = directory / changelog_topic  # one per topic prefix
        self.changelog_topic = changelog_topic
        self.databases: dict[int, Rdict] = {}

    @property
    def held(self) -> set[int]:
        return set(self.databases)

    def _path(self, partition: int) -> Path:
        return self.directory / f"partition-{partition}"

    def _open(self, partition: int) -> Rdict:
        database = self.databases.get(partition)
        if database is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            options = Options(raw_mode=True)
            options.create_if_missing(True)
            database = self.databases[partition] = Rdict(str(self._path(partition)), options)
        return database

    def _drop(self, partition: int) -> None:
        """Delete a partition's database (it is rebuilt from the changelog)."""
        self.close([partition])
        shutil.rmtree(self._path(partition), ignore_errors=True)

    def close(self, partitions: Iterable[int]) -> None:
        for partition in list(partitions):
            database = self.databases.pop(partition, None)
            if database is not None:
                database.close()

    def persisted_offset(self, partition: int) -> int | None:
        raw = self._open(partition).get(PERSISTED_OFFSET_KEY)
        return None if raw is None else int(raw)

    def get(self, partition: int, key: bytes) -> bytes | None:
        database = self.databases.get(partition)
        if database is None:
            raise PartitionNotHeld(f"input partition {partition} is not held by this worker")
        value: bytes | None = database.get(key)
        return value

    def write(self, partition: int, entries: Sequence[tuple[bytes, bytes]], offset: int) -> bool:
        database = self.databases.get(partition)
        if database is None:
            return False
        batch = WriteBatch(raw_mode=True)
        for key, value in entries:
            batch.put(key, value)
        batch.put(PERSISTED_OFFSET_KEY, str(offset).encode())
        database.write(batch)
        return True

    def saved(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        database = self.databases.get(partition)
        if database is None:
            return
        for key, value in database.items():
            if key != PERSISTED_OFFSET_KEY:
                yield key, value

    async def recover(self, settings: KafkaSettings, partitions: Iterable[int]) -> dict[int, int]:
        """Open these partitions' databases and apply their changelog from each one's persisted
        offset to the changelog's end; return the records applied to each.

        A persisted offset at or past the changelog's end means the topic was deleted and made
        again since (its offsets started over): that database is dropped and rebuilt from the
        start.
        """
        wanted = sorted(set(partitions))
        applied = dict.fromkeys(wanted, 0)
        if not wanted:
            return applied
        started = time.monotonic()
        tps = {number: TopicPartition(self.changelog_topic, number) for number in wanted}
        reader = consumer(
            settings,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="gapwatch-items-recovery",
        )
        await reader.start()
        try:
            reader.assign(list(tps.values()))
            ends = await reader.end_offsets(list(tps.values()))
            remaining: dict[TopicPartition, int] = {}
            for number, tp in tps.items():
                persisted = self.persisted_offset(number)
                if persisted is not None and persisted >= ends[tp]:
                    log.warning(
                        "items partition %d: persisted offset %d is past the changelog's end %d "
                        "(the topic was made again): rebuilding it from the changelog",
                        number,
                        persisted,
                        ends[tp],
                    )
                    self._drop(number)
                    self._open(number)
                    persisted = None
                start = 0 if persisted is None else persisted + 1
                if start < ends[tp]:
                    reader.seek(tp, start)  # before the log's start: `earliest` moves it there
                    remaining[tp] = ends[tp]
                else:
                    reader.pause(tp)
            while remaining:
                fetched = await reader.getmany(
                    *remaining, timeout_ms=2000, max_records=RECOVERY_FETCH_RECORDS
                )
                for tp, records in fetched.items():
                    applied[tp.partition] += self._apply(tp.partition, records, remaining[tp])
                for tp in list(remaining):
                    # A compacted log has holes: the position, not the last offset, says done.
                    if await reader.position(tp) >= remaining[tp]:
                        del remaining[tp]
                        reader.pause(tp)
        finally:
            await reader.stop()
        log.info(
            "recovered items partitions %s from the changelog: %d records in %.1fs",
            wanted,
            sum(applied.values()),
            time.monotonic() - started,
        )
        return applied

    def _apply(self, partition: int, records: Sequence[object], end: int) -> int:
        batch = WriteBatch(raw_mode=True)
        newest = None
        count = 0
        for record in records:
            offset: int = record.offset  # type: ignore[attr-defined]
            if offset >= end:
                break
            key: bytes = record.key  # type: ignore[attr-defined]
            value: bytes | None = record.value  # type: ignore[attr-defined]
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
            newest = offset
            count += 1
        if newest is not None:
            batch.put(PERSISTED_OFFSET_KEY, str(newest).encode())
            self._open(partition).write(batch)
        return count

"""Follows gapwatch.promises.v1 into the promises view while this alerter leads.

The compacted topic is read from the offsets stored with the view (from its start on a fresh
schema: the topic holds the latest state of every promise), and each batch is applied together
with its offsets in one transaction, so a crash neither loses nor doubles a state change. Closed
promises older than `alerter_promise_retention_seconds` are tombstoned on the topic; the view
deletes them as it reads the tombstones, like any other reader of the topic would.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.clients import consumer, topic_partitions
from gapwatch.kafka.deadletter import DeadLetter, dead_letter
from gapwatch_alerter.metrics import AlerterMetrics
from gapwatch_alerter.promise_store import PromiseChange, PromiseStore
from gapwatch_alerter.settings import AlerterSettings
from gapwatch_alerter.store import StoreUnavailable

log = logging.getLogger(__name__)

BATCH_RECORDS = 2000
TOMBSTONE_EVERY_SECONDS = 60.0


class PromiseView:
    """Keeps the `promises` tables equal to the topic, while `leading()` says so."""

    def __init__(
        self,
        settings: AlerterSettings,
        promises: PromiseStore,
        producer: AIOKafkaProducer,
        metrics: AlerterMetrics,
        leading: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.promises = promises
        self.producer = producer
        self.metrics = metrics
        self.leading = leading
        self.topic = topic_name(Stream.PROMISES, settings.topic_prefix)
        self.deadletter_topic = topic_name(Stream.DEADLETTER, settings.topic_prefix)
        self.tombstoned_at = 0.0
        self.caught_up = asyncio.Event()  # set once the view has read to the topic's end

    async def run(self) -> None:
        while True:
            if not self.leading():
                await asyncio.sleep(0.5)
                continue
            try:
                await self._follow()
            except StoreUnavailable as exc:
                log.warning("promises view: PostgreSQL unavailable (%s); again", exc)
                await asyncio.sleep(1.0)
            except KafkaError as exc:
                log.warning("promises view: Kafka error (%r); again", exc)
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        offsets = await self.promises.load_offsets(self.topic)
        reader = consumer(
            self.settings, enable_auto_commit=False, client_id="gapwatch-alerter-promises"
        )
        await reader.start()
        try:
            positions = await self._assign(reader, offsets)
            while self.leading():
                batch = await reader.getmany(timeout_ms=500, max_records=BATCH_RECORDS)
                changes: list[PromiseChange] = []
                letters: list[DeadLetter] = []
                appended: list[int] = []  # Kafka timestamps, ms
                for tp, records in batch.items():
                    for record in records:
                        appended.append(record.timestamp)
                        change = self._change(record.key, record.value)
                        if isinstance(change, PromiseChange):
                            changes.append(change)
                        else:
                            letters.append(
                                dead_letter(
                                    "schema_invalid",
                                    change,
                                    service="alerter-promises",
                                    topic=tp.topic,
                                    partition=tp.partition,
                                    offset=record.offset,
                                    key=record.key,
                                    value=record.value,
                                    headers=record.headers,
                                )
                            )
                        positions[tp.partition] = record.offset + 1
                for letter in letters:  # acked before the offsets move past them
                    await self.producer.send_and_wait(
                        self.deadletter_topic, letter.value, key=letter.key, headers=letter.headers
                    )
                if batch:
                    await self.promises.apply(
                        changes, {(self.topic, p): o for p, o in positions.items()}
                    )
                    self.metrics.promise_records.inc(len(changes))
                    committed_ms = time.time() * 1000
                    for stamp in appended:
                        self.metrics.promise_view_lag.observe((committed_ms - stamp) / 1000)
                if not self.caught_up.is_set() and _at_end(reader, positions):
                    self.caught_up.set()
                await self._tombstone_expired()
        finally:
            await reader.stop()

    async def _assign(self, reader: AIOKafkaConsumer, offsets: dict[int, int]) -> dict[int, int]:
        tps = await topic_partitions(reader, self.topic)
        reader.assign(tps)
        positions: dict[int, int] = {}
        for tp in tps:
            if tp.partition in offsets:
                reader.seek(tp, offsets[tp.partition])
            else:
                await reader.seek_to_beginning(tp)
            positions[tp.partition] = await reader.position(tp)
        return positions

    @staticmethod
    def _change(key: bytes | None, value: bytes | None) -> PromiseChange | str:
        """The change a record states, or why it states none (for its dead letter)."""
        item_id, sep, kind = (key or b"").decode("utf-8", "replace").partition("|")
        if not sep or not item_id or not kind:
            return "key: expected '<item id>|<promise kind>'"
        if value is None:
            return PromiseChange(item_id, kind, None)
        try:
            event = orjson.loads(value)
            data = event["data"]
            if data["item_id"] != item_id or data["promise_kind"] != kind:
                return "key: not the record's item id and promise kind"
            for name in ("state", "due_at", "changed_at"):
                if not isinstance(data.get(name), str):
                    return f"data.{name}: expected a string"
            datetime.fromisoformat(data["due_at"])
            datetime.fromisoformat(data["changed_at"])
            if not isinstance(data.get("segment"), dict):
                return "data.segment: expected an object"
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return f"not a promise state record: {exc!r}"[:500]
        return PromiseChange(item_id, kind, data)

    async def _tombstone_expired(self) -> None:
        if time.monotonic() - self.tombstoned_at < TOMBSTONE_EVERY_SECONDS:
            return
        self.tombstoned_at = time.monotonic()
        retention = timedelta(seconds=self.settings.alerter_promise_retention_seconds)
        expired = await self.promises.closed_before(datetime.now(UTC) - retention, 5000)
        for item_id, kind in expired:
            await self.producer.send(self.topic, None, key=f"{item_id}|{kind}".encode())
        if expired:
            await self.producer.flush()
            log.info("tombstoned %d closed promises past their retention", len(expired))


def _at_end(reader: AIOKafkaConsumer, positions: dict[int, int]) -> bool:
    for tp in reader.assignment():
        high = reader.highwater(tp)
        if high is None or positions.get(tp.partition, 0) < high:
            return False
    return True

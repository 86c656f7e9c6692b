"""Produces validated events to their Kafka topics and waits until every one is acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from gapwatch.core.catalog import AnyInputEvent
from gapwatch.core.topics import INPUT_STREAMS, Stream, topic_name
from gapwatch.core.validation import encode_event
from gapwatch.kafka.batches import CLOUDEVENTS_HEADERS, key_partition, send_batches
from gapwatch.kafka.clients import reliable_producer
from gapwatch_ingest.metrics import IngestMetrics
from gapwatch_ingest.settings import IngestSettings

log = logging.getLogger(__name__)


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge in time; nothing of the request may be reported as accepted."""

    retriable = True


class EventPublisher:
    """Owns the idempotent producer; connects in the background so the API can start first."""

    def __init__(
        self,
        settings: IngestSettings,
        metrics: IngestMetrics,
        new_producer: Callable[[IngestSettings], AIOKafkaProducer] = reliable_producer,
    ) -> None:
        self._settings = settings
        self._new_producer = new_producer
        self._metrics = metrics
        self._topics = {s: topic_name(s, settings.topic_prefix) for s in INPUT_STREAMS}
        # Input events are CloudEvents: structured content mode (the CloudEvents Kafka binding).
        self._headers = dict.fromkeys(self._topics.values(), CLOUDEVENTS_HEADERS)
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self) -> None:
        if self._connector is None:
            self._connector = asyncio.create_task(self._connect(), name="kafka-connect")

    async def stop(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
            self._connector = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        self._connected.clear()
        self._metrics.kafka_up.set(0)

    async def _connect(self) -> None:
        # Retries until connected, whatever the failure: a producer that cannot start for a
        # reason aiokafka does not wrap (TLS, DNS, a bad SASL mechanism) must not end this task
        # silently and leave the service up but never ready.
        delay = 0.5
        while True:
            producer = self._new_producer(self._settings)
            try:
                await producer.start()
            except Exception as exc:  # noqa: BLE001 - see above: retry whatever it was
                with contextlib.suppress(Exception):
                    await producer.stop()
                log.warning(
                    "Kafka not reachable at %s (%s); retrying in %.1fs",
                    self._settings.kafka_bootstrap,
                    exc if isinstance(exc, KafkaError) else repr(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._producer = producer
            self._connected.set()
            self._metrics.kafka_up.set(1)
            log.info("producer connected to %s", self._settings.kafka_bootstrap)
            return

    async def ready(self, timeout: float = 2.0) -> bool:
        """True when the cluster answers a metadata request right now."""
        producer = self._producer
        if producer is None:
            return False
        try:
            ok = bool(await asyncio.wait_for(producer.client.force_metadata_update(), timeout))
        except (TimeoutError, KafkaError):
            ok = False
        self._metrics.kafka_up.set(1 if ok else 0)
        return ok

    async def publish(self, events: Sequence[AnyInputEvent]) -> dict[Stream, int]:
        """Produce `events` and return per-stream counts once Kafka acknowledged all of them.

        Raises KafkaUnavailable if that does not happen within the produce timeout; some events
        may still reach Kafka later, which is harmless because consumers deduplicate by id.
        """
        producer = self._producer
        if producer is None:
            raise KafkaUnavailable("producer is not connected to Kafka")
        started = time.perf_counter()
        try:
            counts = await asyncio.wait_for(
                self._send_all(producer, events), self._settings.ingest_produce_timeout_seconds
            )
        except TimeoutError:
            raise KafkaUnavailable(
                f"Kafka did not acknowledge within {self._settings.ingest_produce_timeout_seconds}s"
            ) from None
        except KafkaError as exc:
            raise KafkaUnavailable(f"Kafka refused the events: {exc!r}") from None
        self._metrics.produce_seconds.observe(time.perf_counter() - started)
        return counts

    async def _send_all(
        self, producer: AIOKafkaProducer, events: Sequence[AnyInputEvent]
    ) -> dict[Stream, int]:
        # One batch per partition instead of one send() per event (`send_batches`): per-message
        # futures and accumulator appends were the largest cost of a request.
        topics = self._topics
        counts: dict[Stream, int] = {}
        by_partition: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
        partitions: dict[str, list[int]] = {}
        # Events of one item come together; murmur2 is pure Python, so hash each key once.
        partition_of: dict[tuple[str, bytes], int] = {}
        for event in events:
            stream = event.stream
            counts[stream] = counts.get(stream, 0) + 1
            topic = topics[stream]
            ids = partitions.get(topic)
            if ids is None:
                ids = partitions[topic] = sorted(await producer.partitions_for(topic))
            key = event.key
            partition = partition_of.get((topic, key), -1)
            if partition < 0:
                partition = partition_of[topic, key] = key_partition(key, ids)
            by_partition.setdefault((topic, partition), []).append((key, encode_event(event)))
        await send_batches(producer, by_partition, self._headers)
        return counts

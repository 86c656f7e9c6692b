"""The ingest's Kafka connector keeps retrying whatever stops a producer from starting."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry

from gapwatch_ingest.metrics import IngestMetrics
from gapwatch_ingest.publisher import EventPublisher
from gapwatch_ingest.settings import IngestSettings


class StartsOnThirdTry:
    """Stands in for a producer whose start fails twice, the second time with a non-Kafka error
    (as TLS or DNS failures are), then succeeds."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.stopped = False

    async def start(self) -> None:
        if self.failures:
            raise self.failures.pop(0)

    async def stop(self) -> None:
        self.stopped = True


async def test_a_non_kafka_start_failure_is_retried_until_connected(monkeypatch: Any):
    monkeypatch.setattr("gapwatch_ingest.publisher.asyncio.sleep", _no_sleep)
    failures: list[BaseException] = [
        KafkaConnectionError("refused"),
        OSError("certificate verify failed"),
    ]
    made: list[StartsOnThirdTry] = []

    def new_producer(_: IngestSettings) -> Any:
        made.append(StartsOnThirdTry(failures))
        return made[-1]

    settings = IngestSettings(kafka_bootstrap="127.0.0.1:1", ingest_auth_disabled=True)
    metrics = IngestMetrics(CollectorRegistry())
    publisher = EventPublisher(settings, metrics, new_producer=new_producer)
    await publisher.start()
    await asyncio.wait_for(publisher._connected.wait(), 5)
    assert len(made) == 3
    assert [p.stopped for p in made] == [True, True, False]
    assert metrics.kafka_up._value.get() == 1
    await publisher.stop()
    assert made[-1].stopped


_real_sleep = asyncio.sleep


async def _no_sleep(_: float) -> None:
    await _real_sleep(0)

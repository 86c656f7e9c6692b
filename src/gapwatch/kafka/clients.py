"""Builds aiokafka clients from KafkaSettings, with the security options passed through."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from gapwatch.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)


def _ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    if "SSL" not in settings.kafka_security_protocol:
        return None
    return create_ssl_context(
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
    )


def connection_options(settings: KafkaSettings) -> dict[str, Any]:
    """The keyword arguments every aiokafka client needs to reach the cluster."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
        "ssl_context": _ssl_context(settings),
    }
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def reliable_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer that waits for all in-sync replicas: nothing acked is lost."""
    options: dict[str, Any] = {
        **connection_options(settings),
        "client_id": settings.kafka_client_id,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 2,
        "max_batch_size": 256 * 1024,
        "compression_type": None,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def consumer(settings: KafkaSettings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        **connection_options(settings),
        "client_id": settings.kafka_client_id,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


def admin_client(settings: KafkaSettings, **overrides: Any) -> AIOKafkaAdminClient:
    options: dict[str, Any] = {
        **connection_options(settings),
        "client_id": settings.kafka_client_id,
    }
    options.update(overrides)
    return AIOKafkaAdminClient(**options)


async def topic_partitions(reader: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of `topic`, waiting (and saying so) until the topic exists."""
    while True:
        # A fresh consumer with no subscription knows no topics: ask the cluster directly.
        metadata = await reader._client.fetch_all_metadata()
        partitions = metadata.partitions_for_topic(topic)
        if partitions:
            return [TopicPartition(topic, p) for p in sorted(partitions)]
        log.warning("topic %s does not exist yet; waiting", topic)
        await asyncio.sleep(2.0)

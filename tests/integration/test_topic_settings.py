"""`gapwatch topics` creates every topic with its retention and cleanup policy (issue 24)."""

from __future__ import annotations

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.clients import admin_client
from gapwatch.kafka.settings import KafkaSettings
from gapwatch.kafka.topics import TOPIC_CONFIGS, ensure_topics

pytestmark = pytest.mark.integration


async def described(settings: KafkaSettings) -> dict[str, dict[str, str]]:
    admin = admin_client(settings)
    await admin.start()
    try:
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, topic_name(s, settings.topic_prefix))
            for s in Stream
        ]
        out: dict[str, dict[str, str]] = {}
        for response in await admin.describe_configs(resources):
            for resource in response.resources:
                _, _, _, name, entries = resource[:5]
                out[name] = {entry[0]: entry[1] for entry in entries}
        return out
    finally:
        await admin.close()


async def test_every_topic_gets_its_retention_and_cleanup_policy(kafka: KafkaSettings):
    configs = await described(kafka)
    for stream in Stream:
        actual = configs[topic_name(stream, kafka.topic_prefix)]
        for name, value in TOPIC_CONFIGS[stream].items():
            assert actual[name] == value, (stream, name)
    promises = configs[topic_name(Stream.PROMISES, kafka.topic_prefix)]
    assert promises["cleanup.policy"] == "compact"  # keyed by promise: the current state
    assert configs[topic_name(Stream.GAPS, kafka.topic_prefix)]["cleanup.policy"] == "delete"


async def test_settings_override_the_defaults(kafka: KafkaSettings):
    settings = kafka.model_copy(
        update={
            "topic_prefix": kafka.topic_prefix + "o.",
            "kafka_topic_configs": "gaps:retention.ms=3600000, deadletter:retention.ms=-1",
        }
    )
    await ensure_topics(settings)
    try:
        configs = await described(settings)
        assert configs[topic_name(Stream.GAPS, settings.topic_prefix)]["retention.ms"] == "3600000"
        assert configs[topic_name(Stream.DEADLETTER, settings.topic_prefix)]["retention.ms"] == "-1"
        tickets = configs[topic_name(Stream.TICKETS, settings.topic_prefix)]
        assert tickets["retention.ms"] == TOPIC_CONFIGS[Stream.TICKETS]["retention.ms"]
    finally:
        admin = admin_client(settings)
        await admin.start()
        try:
            await admin.delete_topics([topic_name(s, settings.topic_prefix) for s in Stream])
        finally:
            await admin.close()

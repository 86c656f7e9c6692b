"""Creates gapwatch's topics with configured partition counts (never broker auto-creation)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from gapwatch.core.topics import TOPIC_CONFIGS, Stream, topic_name
from gapwatch.kafka.clients import admin_client
from gapwatch.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)


def topic_configs(settings: KafkaSettings, stream: Stream) -> dict[str, str]:
    """The configs `stream`'s topic is created with: the defaults, then the settings' own."""
    configs = dict(TOPIC_CONFIGS.get(stream, {}))
    for item in settings.kafka_topic_configs.split(","):
        if item.strip():
            target, _, pair = item.strip().partition(":")
            name, _, value = pair.partition("=")
            if target == stream.value:
                configs[name] = value
    return configs


class TopicMismatch(Exception):
    """An existing topic has a partition count that breaks co-partitioning."""

    retriable = False


async def _partition_counts(
    admin: AIOKafkaAdminClient, topics: list[str], timeout: float = 30.0
) -> dict[str, int]:
    # A freshly created topic shows up in metadata before its partitions do; wait for them.
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        described = await admin.describe_topics(topics)
        counts = {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}
        if len(counts) == len(topics) and all(counts.values()):
            return counts
        if asyncio.get_running_loop().time() > deadline:
            raise TopicMismatch(f"topics not ready after {timeout}s: {described}")
        await asyncio.sleep(0.1)


async def ensure_topics(
    settings: KafkaSettings, streams: Iterable[Stream] = tuple(Stream)
) -> dict[str, int]:
    """Create missing topics; verify existing ones. Returns topic -> partition count."""
    return await ensure_named_topics(
        settings,
        {topic_name(s, settings.topic_prefix): topic_configs(settings, s) for s in streams},
    )


async def ensure_named_topics(
    settings: KafkaSettings, wanted: dict[str, dict[str, str]]
) -> dict[str, int]:
    """Create the missing ones of these topics (name -> topic configs), each with the configured
    partition count; verify that existing ones have it. Returns topic -> partition count."""
    admin = admin_client(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=name,
                num_partitions=settings.kafka_partitions,
                replication_factor=settings.kafka_replication_factor,
                topic_configs=configs,
            )
            for name, configs in wanted.items()
            if name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
            log.info("created topics %s", ", ".join(t.name for t in missing))
        counts = await _partition_counts(admin, list(wanted))
    finally:
        await admin.close()
    wrong = {t: n for t, n in counts.items() if n != settings.kafka_partitions}
    if wrong:
        raise TopicMismatch(
            f"topics {wrong} do not have GAPWATCH_KAFKA_PARTITIONS={settings.kafka_partitions} "
            "partitions; input topics must be co-partitioned"
        )
    return counts

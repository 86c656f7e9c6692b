"""Fault tests: fresh prefixed topics per test, as in tests/integration, deleted afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from gapwatch.kafka.clients import connection_options
from gapwatch.kafka.settings import KafkaSettings
from gapwatch.kafka.topics import ensure_topics
from tests.integration.conftest import (  # noqa: F401 - a fixture and the ordering hook
    PARTITIONS,
    bootstrap,
    pytest_collection_modifyitems,
)


@pytest.fixture
async def kafka(bootstrap: str) -> AsyncIterator[KafkaSettings]:  # noqa: F811
    """Settings for a fresh set of topics; they and the scorer's internal topics go afterwards.

    A fault run leaves some 40 partitions behind, and a restarted broker loads every partition
    it holds before it serves again: left in place, they would slow every later broker restart.
    """
    prefix = f"f{uuid.uuid4().hex[:10]}."
    settings = KafkaSettings(
        kafka_bootstrap=bootstrap, topic_prefix=prefix, kafka_partitions=PARTITIONS
    )
    await asyncio.wait_for(ensure_topics(settings), 60)
    yield settings
    admin = AIOKafkaAdminClient(**connection_options(settings))
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if prefix in t]
        if ours:
            await admin.delete_topics(ours, timeout_ms=30_000)
    finally:
        await admin.close()

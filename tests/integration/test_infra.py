"""The infrastructure `make infra` starts is real and configured as gapwatch needs it."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from aiokafka.errors import KafkaError

from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.clients import admin_client, reliable_producer
from gapwatch.kafka.settings import KafkaSettings
from tests.integration.conftest import infra_env

pytestmark = pytest.mark.integration


async def test_make_infra_created_every_topic_co_partitioned(bootstrap: str):
    settings = KafkaSettings(kafka_bootstrap=bootstrap)
    admin = admin_client(settings)
    await admin.start()
    try:
        described = await admin.describe_topics([topic_name(s) for s in Stream])
    finally:
        await admin.close()
    counts = {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}
    assert set(counts) == {topic_name(s) for s in Stream}
    assert len(set(counts.values())) == 1, counts


async def test_broker_does_not_auto_create_topics(bootstrap: str):
    settings = KafkaSettings(kafka_bootstrap=bootstrap)
    producer = reliable_producer(settings, request_timeout_ms=3000)
    await producer.start()
    try:
        with pytest.raises(KafkaError):
            await producer.send_and_wait(f"not-created-{uuid.uuid4().hex}", b"x")
    finally:
        await producer.stop()


async def test_postgres_is_real_and_durable_across_connections():
    url = infra_env()["GAPWATCH_DATABASE_URL"]
    schema = f"t_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"CREATE TABLE {schema}.promises (id text primary key, due timestamptz)")
        await conn.execute(
            f"INSERT INTO {schema}.promises VALUES ('T-1', '2026-03-02T09:00:00+01:00')"
        )
        other = await asyncpg.connect(url, timeout=10)
        try:
            due = await other.fetchval(f"SELECT due FROM {schema}.promises WHERE id = 'T-1'")
            assert due.isoformat() == "2026-03-02T08:00:00+00:00"
            assert (await other.fetchval("SHOW server_version_num")) >= "150000"
        finally:
            await other.close()
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()

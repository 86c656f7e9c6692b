"""Started before PostgreSQL answers, or refused its login, the alerter waits rather than exit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from gapwatch.kafka.settings import KafkaSettings
from tests.integration.alerter_support import (
    burn_rule,
    eventually,
    fresh_schema,
    spawn_alerter,
    webhook_receiver,
    write_rules,
)
from tests.integration.conftest import free_port, infra_env, stop_process

pytestmark = pytest.mark.timeout(180)


def database_url(*, port: int | None = None, password: str | None = None) -> str:
    """The infra's PostgreSQL URL with another port or password."""
    parts = urlsplit(infra_env()["GAPWATCH_DATABASE_URL"])
    user = parts.username or ""
    secret = parts.password if password is None else password
    host = f"{parts.hostname}:{parts.port if port is None else port}"
    return urlunsplit(parts._replace(netloc=f"{user}:{secret}@{host}"))


@contextlib.asynccontextmanager
async def forwarder(listen_port: int, target_port: int) -> AsyncIterator[None]:
    """A TCP forwarder from 127.0.0.1:listen_port to the real PostgreSQL on target_port."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    try:
        yield
    finally:
        server.close()


async def test_started_before_postgresql_it_waits_then_connects_and_leads(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    rules = write_rules(tmp_path / "alerts.yaml", [burn_rule()], [webhook_receiver("http://x")])
    later = free_port()  # PostgreSQL "starts" on this port only later in the test
    async with fresh_schema() as schema:
        alerter = spawn_alerter(
            kafka, tmp_path, schema, rules, GAPWATCH_DATABASE_URL=database_url(port=later)
        )
        try:
            waiting = await eventually(alerter.readiness, 60, "the API to answer while waiting")
            assert waiting["postgresql"] == "unreachable"
            assert waiting["status"] == "not ready"
            health = httpx.get(alerter.url + "/healthz", timeout=5)
            assert health.status_code == 200
            await eventually(
                lambda: alerter.log().count("cannot connect to PostgreSQL yet") >= 2,
                30,
                "a second connection attempt",
            )
            assert alerter.process.poll() is None, "the alerter exited instead of waiting"
            real = urlsplit(infra_env()["GAPWATCH_DATABASE_URL"]).port
            assert real is not None
            async with forwarder(later, real):
                # In threads: the forwarder runs on this event loop, and the alerter's answers
                # need PostgreSQL through it.
                leading = lambda: asyncio.to_thread(alerter.leading)  # noqa: E731
                await eventually(leading, 60, "the alerter to connect and lead")
                assert await asyncio.to_thread(alerter.alerts) == []
        finally:
            stop_process(alerter.process)


async def test_a_refused_login_is_retried_and_reported_without_the_password(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    rules = write_rules(tmp_path / "alerts.yaml", [burn_rule()], [webhook_receiver("http://x")])
    wrong = "not-the-password-7f3a91"
    async with fresh_schema() as schema:
        alerter = spawn_alerter(
            kafka, tmp_path, schema, rules, GAPWATCH_DATABASE_URL=database_url(password=wrong)
        )
        try:
            await eventually(
                lambda: alerter.log().count("password authentication failed") >= 2,
                60,
                "two refused logins, each logged with the server's reason",
            )
            assert alerter.process.poll() is None, "the alerter exited on a refused login"
            body = await eventually(alerter.readiness, 30, "the API to answer")
            assert body["postgresql"] == "unreachable"
            assert wrong not in alerter.log()
        finally:
            stop_process(alerter.process)


async def test_with_kafka_down_at_start_readiness_names_kafka_not_postgresql(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    rules = write_rules(tmp_path / "alerts.yaml", [burn_rule()], [webhook_receiver("http://x")])
    nowhere = f"127.0.0.1:{free_port()}"
    async with fresh_schema() as schema:
        alerter = spawn_alerter(kafka, tmp_path, schema, rules, GAPWATCH_KAFKA_BOOTSTRAP=nowhere)
        try:
            await eventually(
                lambda: "cannot connect to Kafka yet" in alerter.log(), 90, "a Kafka retry"
            )
            body = await eventually(alerter.readiness, 30, "the API to answer")
            assert body == {
                "status": "not ready",
                "postgresql": "ok",
                "kafka": "unreachable",
                "leader": False,
            }
            assert alerter.alerts() == []  # the API serves from PostgreSQL meanwhile
            assert alerter.process.poll() is None
        finally:
            stop_process(alerter.process)

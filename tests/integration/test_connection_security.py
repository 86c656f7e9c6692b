"""Kafka TLS/SASL and PostgreSQL TLS settings reach the wire from the services' environment.

The local broker and database speak plaintext, so a service told to use TLS or SASL must fail to
connect, and fail in the way that shows it tried: that is the proof the settings got through.
"""

from __future__ import annotations

import os
from pathlib import Path

import certifi
import httpx
import pytest

from gapwatch.kafka.settings import KafkaSettings
from gapwatch_alerter.store import AlertStore, StoreUnavailable
from tests.integration.alerter_support import burn_rule, eventually, fresh_schema, write_rules
from tests.integration.conftest import (
    TOKEN,
    free_port,
    infra_env,
    spawn,
    stop_process,
    wait_until_ready,
)

pytestmark = pytest.mark.integration


def database_url(**params: str) -> str:
    url = infra_env()["GAPWATCH_DATABASE_URL"]
    return url + ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in params.items())


@pytest.mark.parametrize(
    ("env", "attempt"),
    [
        (
            {
                "GAPWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
                "GAPWATCH_KAFKA_SSL_CAFILE": certifi.where(),
            },
            f"Loading SSL CA from {certifi.where()}",
        ),
        (
            {
                "GAPWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "GAPWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "GAPWATCH_KAFKA_SASL_USERNAME": "gapwatch-svc",
                "GAPWATCH_KAFKA_SASL_PASSWORD": "not-a-real-password",
            },
            "IllegalSaslStateError",
        ),
    ],
    ids=["ssl", "sasl"],
)
def test_kafka_security_settings_reach_the_running_ingest(
    kafka: KafkaSettings, tmp_path: Path, env: dict[str, str], attempt: str
):
    port = free_port()
    log_path = tmp_path / "ingest.log"
    environment = {
        **os.environ,
        "GAPWATCH_KAFKA_BOOTSTRAP": kafka.kafka_bootstrap,
        "GAPWATCH_TOPIC_PREFIX": kafka.topic_prefix,
        "GAPWATCH_INGEST_PORT": str(port),
        "GAPWATCH_INGEST_TOKENS": TOKEN,
        **env,
    }
    process = spawn("gapwatch_ingest", environment, log_path)
    try:
        wait_until_ready(
            "ingest",
            process,
            log_path,
            lambda: log_path.read_text().count("Kafka not reachable") >= 2,
            timeout=60,
        )
        readiness = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert readiness.status_code == 503
    finally:
        stop_process(process)
    assert attempt in log_path.read_text()


async def test_postgresql_tls_settings_in_the_url_reach_asyncpg(tmp_path: Path):
    with pytest.raises(StoreUnavailable, match="rejected SSL upgrade"):
        await AlertStore.connect(database_url(sslmode="require"))
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(StoreUnavailable) as caught:
        await AlertStore.connect(database_url(sslmode="verify-full", sslrootcert=str(missing)))
    assert isinstance(caught.value.__cause__, FileNotFoundError)  # the root certificate was read
    store = await AlertStore.connect(database_url(sslmode="disable"))
    await store.close()


async def test_the_alerter_takes_postgresql_tls_from_its_environment(
    kafka: KafkaSettings, tmp_path: Path
):
    receivers = [{"name": "am", "type": "alertmanager", "url": "http://127.0.0.1:9"}]
    rules = write_rules(tmp_path / "alerts.yaml", [burn_rule()], receivers)
    log_path = tmp_path / "alerter.log"
    async with fresh_schema() as schema:
        environment = {
            **os.environ,
            "GAPWATCH_KAFKA_BOOTSTRAP": kafka.kafka_bootstrap,
            "GAPWATCH_TOPIC_PREFIX": kafka.topic_prefix,
            "GAPWATCH_DATABASE_URL": database_url(sslmode="require"),
            "GAPWATCH_ALERTER_DB_SCHEMA": schema,
            "GAPWATCH_ALERTER_RULES_FILE": str(rules),
            "GAPWATCH_ALERTER_PORT": str(free_port()),
            "GAPWATCH_ALERTER_TOKENS": TOKEN,
        }
        process = spawn("gapwatch_alerter", environment, log_path)
        try:
            # The local server has no TLS: the alerter's TLS request reaches it and is refused,
            # and the alerter keeps retrying (a server may be given TLS) without exiting.
            await eventually(
                lambda: "rejected SSL upgrade" in log_path.read_text(errors="replace"),
                60,
                "the server to refuse the alerter's TLS request",
            )
            assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
        finally:
            stop_process(process)

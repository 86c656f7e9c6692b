"""Kafka SASL/TLS and PostgreSQL TLS settings go from the environment to the clients, unchanged."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import certifi
import pytest
from aiokafka import AIOKafkaClient
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from gapwatch.kafka.clients import admin_client, connection_options, consumer, reliable_producer
from gapwatch.kafka.settings import KafkaSettings
from gapwatch.settings import SettingsError, load_settings
from gapwatch_alerter.settings import AlerterSettings
from gapwatch_alerter.store import AlertStore
from gapwatch_scorer.app import faust_credentials
from gapwatch_scorer.settings import ScorerSettings

SASL_SSL = {
    "GAPWATCH_KAFKA_BOOTSTRAP": "kafka-1.example:9096,kafka-2.example:9096",
    "GAPWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "GAPWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "GAPWATCH_KAFKA_SASL_USERNAME": "gapwatch-svc",
    "GAPWATCH_KAFKA_SASL_PASSWORD": "sasl-pass-3c9e",
}


def set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def client_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key, for mTLS settings (and as a CA file)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a client certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "client.pem", directory / "client.key"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=gapwatch-test-client", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def clients_of(settings: KafkaSettings) -> list[AIOKafkaClient]:
    """The connection objects of the producer, consumer and admin client gapwatch builds."""
    producer = reliable_producer(settings)
    reader = consumer(settings, "gapwatch.tickets.v1")
    admin = admin_client(settings)
    try:
        return [producer.client, reader._client, admin._client]
    finally:
        await producer.stop()
        await reader.stop()
        await admin.close()


def security_of(client: AIOKafkaClient) -> dict[str, Any]:
    return {
        "bootstrap": sorted((host, port) for host, port, _ in client.hosts),
        "protocol": client._security_protocol,
        "mechanism": client._sasl_mechanism,
        "username": client._sasl_plain_username,
        "password": client._sasl_plain_password,
    }


async def test_sasl_ssl_from_the_environment_reaches_every_kafka_client(
    monkeypatch: pytest.MonkeyPatch,
):
    set_env(monkeypatch, {**SASL_SSL, "GAPWATCH_KAFKA_SSL_CAFILE": certifi.where()})
    settings = load_settings(KafkaSettings)
    options = connection_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "gapwatch-svc"
    assert options["sasl_plain_password"] == "sasl-pass-3c9e"
    for client in await clients_of(settings):
        assert security_of(client) == {
            "bootstrap": [("kafka-1.example", 9096), ("kafka-2.example", 9096)],
            "protocol": "SASL_SSL",
            "mechanism": "SCRAM-SHA-512",
            "username": "gapwatch-svc",
            "password": "sasl-pass-3c9e",
        }
        context = client._ssl_context
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        # The CA file was read: the context trusts what it holds, and only that.
        assert len(context.get_ca_certs()) > 50


async def test_mutual_tls_files_are_loaded(
    monkeypatch: pytest.MonkeyPatch, client_pair: tuple[Path, Path]
):
    cert, key = client_pair
    set_env(
        monkeypatch,
        {
            "GAPWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
            "GAPWATCH_KAFKA_SSL_CAFILE": str(cert),
            "GAPWATCH_KAFKA_SSL_CERTFILE": str(cert),
            "GAPWATCH_KAFKA_SSL_KEYFILE": str(key),
        },
    )
    settings = load_settings(KafkaSettings)
    assert "sasl_mechanism" not in connection_options(settings)
    for client in await clients_of(settings):
        assert client._security_protocol == "SSL"
        context = client._ssl_context
        assert isinstance(context, ssl.SSLContext)
        issuers = [dict(item[0] for item in ca["subject"]) for ca in context.get_ca_certs()]
        assert issuers == [{"commonName": "gapwatch-test-client"}]


async def test_sasl_plaintext_has_no_tls_and_plaintext_has_no_sasl(
    monkeypatch: pytest.MonkeyPatch,
):
    sasl_plaintext = {**SASL_SSL, "GAPWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    set_env(monkeypatch, {**sasl_plaintext, "GAPWATCH_KAFKA_SASL_MECHANISM": "PLAIN"})
    for client in await clients_of(load_settings(KafkaSettings)):
        assert security_of(client)["protocol"] == "SASL_PLAINTEXT"
        assert security_of(client)["mechanism"] == "PLAIN"
        assert security_of(client)["password"] == "sasl-pass-3c9e"
        assert client._ssl_context is None

    for name in SASL_SSL:
        monkeypatch.delenv(name)
    options = connection_options(load_settings(KafkaSettings))
    assert options == {
        "bootstrap_servers": "127.0.0.1:19092",
        "security_protocol": "PLAINTEXT",
        "ssl_context": None,
    }


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"GAPWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "GAPWATCH_KAFKA_SASL_MECHANISM"),
        (
            {
                "GAPWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "GAPWATCH_KAFKA_SASL_MECHANISM": "PLAIN",
                "GAPWATCH_KAFKA_SASL_USERNAME": "u",
            },
            "GAPWATCH_KAFKA_SASL_PASSWORD",
        ),
        (
            {"GAPWATCH_KAFKA_SASL_MECHANISM": "PLAIN"},
            "GAPWATCH_KAFKA_SECURITY_PROTOCOL is PLAINTEXT",
        ),
        ({"GAPWATCH_KAFKA_SSL_CAFILE": certifi.where()}, "GAPWATCH_KAFKA_SSL_CAFILE is set"),
        (
            {
                "GAPWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
                "GAPWATCH_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem",
            },
            "GAPWATCH_KAFKA_SSL_CAFILE: no such file",
        ),
    ],
)
def test_security_settings_that_cannot_work_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
):
    # Without this check aiokafka refuses them only when a client is built, inside a running
    # service, or (a mechanism without SASL) connects without the credentials.
    set_env(monkeypatch, env)
    with pytest.raises(SettingsError, match=named):
        load_settings(KafkaSettings)


@pytest.mark.parametrize(
    ("protocol", "expected_protocol"),
    [("SASL_SSL", "SASL_SSL"), ("SASL_PLAINTEXT", "SASL_PLAINTEXT"), ("SSL", "SSL")],
)
def test_the_scorer_hands_the_same_security_to_faust(
    monkeypatch: pytest.MonkeyPatch, protocol: str, expected_protocol: str
):
    env = {**SASL_SSL, "GAPWATCH_KAFKA_SECURITY_PROTOCOL": protocol}
    if protocol == "SSL":
        env = {"GAPWATCH_KAFKA_SECURITY_PROTOCOL": "SSL"}
    if "SSL" in protocol:
        env["GAPWATCH_KAFKA_SSL_CAFILE"] = certifi.where()
    set_env(monkeypatch, env)
    auth = credentials_to_aiokafka_auth(faust_credentials(load_settings(ScorerSettings)))
    assert auth["security_protocol"] == expected_protocol
    if protocol.startswith("SASL_"):
        assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
        assert auth["sasl_plain_username"] == "gapwatch-svc"
        assert auth["sasl_plain_password"] == "sasl-pass-3c9e"
    if "SSL" in protocol:
        assert isinstance(auth["ssl_context"], ssl.SSLContext)
        assert auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    else:
        assert auth["ssl_context"] is None


async def test_the_database_url_reaches_asyncpg_with_its_tls_parameters(
    monkeypatch: pytest.MonkeyPatch,
):
    dsn = (
        "postgresql://gapwatch:db-pass-61aa@db.example:5432/gapwatch"
        "?sslmode=verify-full&sslrootcert=/etc/gapwatch/pg-ca.pem"
        "&sslcert=/etc/gapwatch/pg.crt&sslkey=/etc/gapwatch/pg.key"
    )
    monkeypatch.setenv("GAPWATCH_DATABASE_URL", dsn)
    settings = load_settings(AlerterSettings)
    calls: list[tuple[str, str]] = []

    async def create_pool(given: str, **kwargs: Any) -> object:
        calls.append(("create_pool", given))
        return object()

    async def connect(given: str, **kwargs: Any) -> object:
        calls.append(("connect", given))
        return object()

    monkeypatch.setattr("asyncpg.create_pool", create_pool)
    monkeypatch.setattr("asyncpg.connect", connect)
    # The alerter's start-up path (app.lifespan) passes exactly this secret's value.
    store = await AlertStore.connect(settings.database_url.get_secret_value())
    await store._dedicated("gapwatch-alerter-listen")  # the LISTEN and leadership connections
    assert calls == [("create_pool", dsn), ("connect", dsn)]

"""No secret appears in a log, a metric or an API answer, including when authentication fails.

Every service gets every secret in its environment (as docker compose and Kubernetes give them),
each a distinctive value; the services are exercised (right and wrong tokens, failing receivers
that echo what they were sent, refused Kafka and PostgreSQL logins), then everything they said is
searched for each value.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gapwatch.core.examples import EXAMPLES
from gapwatch.kafka.settings import KafkaSettings
from tests.integration.alerter_support import (
    burn_rule,
    eventually,
    fresh_schema,
    publish_round,
    start_alerter,
    write_rules,
)
from tests.integration.conftest import (
    free_port,
    infra_env,
    spawn,
    start_ingest,
    stop_process,
    wait_until_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

INGEST_TOKENS = ("ingest-tok-secret-a1f3", "ingest-tok-secret-b7c9")
ALERTER_TOKEN = "alerter-tok-secret-4d8e"
SASL_PASSWORD = "sasl-pw-secret-90ab"
DB_PASSWORD = "db-pw-secret-3c6f"  # a wrong one: the local PostgreSQL's password is not secret
DB_SSL_PASSWORD = "db-sslkey-pw-secret-71e2"  # libpq sslpassword, carried by the working URL
WEBHOOK_HMAC = "hook-hmac-secret-5b0d"
WEBHOOK_TOKEN = "hook-path-secret-c42a"
SLACK_TOKEN = "slack-path-secret-e913"
PAGERDUTY_KEY = "pd-routing-secret-0f57"

SECRETS = (
    *INGEST_TOKENS,
    ALERTER_TOKEN,
    SASL_PASSWORD,
    DB_PASSWORD,
    DB_SSL_PASSWORD,
    WEBHOOK_HMAC,
    WEBHOOK_TOKEN,
    SLACK_TOKEN,
    PAGERDUTY_KEY,
)
WINDOWS = ("5m", "30m", "1h", "6h")


def database_url(password: str | None = None, **params: str) -> str:
    """The local PostgreSQL URL, with another password and extra libpq parameters."""
    url = infra_env()["GAPWATCH_DATABASE_URL"]
    if password is not None:
        url = url.replace("gapwatch:gapwatch@", f"gapwatch:{password}@")
    if params:
        url += ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in params.items())
    return url


def secret_env(receiver_port: int) -> dict[str, str]:
    """Every secret of the stack, as one environment all services share."""
    hooks = f"http://127.0.0.1:{receiver_port}"
    return {
        "GAPWATCH_INGEST_TOKENS": ",".join(INGEST_TOKENS),
        "GAPWATCH_INGEST_TOKEN": INGEST_TOKENS[0],
        "GAPWATCH_ALERTER_TOKENS": ALERTER_TOKEN,
        "GAPWATCH_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        "GAPWATCH_DATABASE_URL": database_url(sslmode="prefer", sslpassword=DB_SSL_PASSWORD),
        "GAPWATCH_WEBHOOK_SECRET": WEBHOOK_HMAC,
        "GAPWATCH_WEBHOOK_URL": f"{hooks}/hooks/{WEBHOOK_TOKEN}",
        "SLACK_WEBHOOK_URL": f"{hooks}/services/T0G4P/B0W4TCH/{SLACK_TOKEN}",
        "PAGERDUTY_ROUTING_KEY": PAGERDUTY_KEY,
    }


def assert_no_secret(texts: dict[str, str]) -> None:
    hits = [(where, s) for where, text in texts.items() for s in SECRETS if s in text]
    assert not hits, f"secrets found: {hits}"
    # The working database URL's own password is "gapwatch": look for the URL's credentials.
    hits = [where for where, text in texts.items() if "gapwatch:gapwatch@" in text]
    assert not hits, f"database credentials found in {hits}"


def answers(base: str, paths: tuple[str, ...]) -> dict[str, str]:
    """Status, headers and body of GET `path` for each path, as one text per path."""
    texts = {}
    with httpx.Client(base_url=base, timeout=10) as http:
        for path in paths:
            response = http.get(path)
            texts[f"GET {path}"] = f"{response.status_code} {response.headers} {response.text}"
    return texts


# --- ingest ------------------------------------------------------------------------------------


def test_the_ingest_service_shows_no_secret(kafka: KafkaSettings, tmp_path: Path):
    ingest = start_ingest(kafka, tmp_path, **secret_env(free_port()))
    texts: dict[str, str] = {}
    try:
        event = orjson.dumps(EXAMPLES["gapwatch.job.arrived.v1"])
        with httpx.Client(base_url=ingest.url, timeout=10) as http:
            attempts = [
                *(f"Bearer {token}" for token in INGEST_TOKENS),
                f"Bearer {INGEST_TOKENS[0]}x",  # a near miss
                f"Bearer {INGEST_TOKENS[0][:-1]}",
                f"Basic {INGEST_TOKENS[1]}",
                f"bearer  {ALERTER_TOKEN}",  # another service's token
                "",
            ]
            statuses = []
            for authorization in attempts:
                headers = {"Content-Type": "application/json", "Authorization": authorization}
                response = http.post("/v1/events", content=event, headers=headers)
                statuses.append(response.status_code)
                texts[f"POST {authorization!r}"] = f"{response.headers} {response.text}"
            # Not JSON, wrong type: the error paths that quote input.
            response = http.post(
                "/v1/events",
                content=b'{"token": "' + INGEST_TOKENS[0].encode() + b'",',
                headers={"Authorization": f"Bearer {INGEST_TOKENS[1]}"},
            )
            texts["POST malformed"] = f"{response.status_code} {response.text}"
        assert statuses == [202, 202, 401, 401, 401, 401, 401]
        texts |= answers(ingest.url, ("/metrics", "/openapi.json", "/docs", "/healthz", "/readyz"))
    finally:
        stop_process(ingest.process)
    texts["log"] = ingest.log()
    assert "Application startup complete" in texts["log"]
    assert_no_secret(texts)


def test_the_ingest_service_shows_no_secret_when_kafka_refuses_its_login(
    kafka: KafkaSettings, tmp_path: Path
):
    log_path = tmp_path / "ingest-sasl.log"
    port = free_port()
    env = {
        **os.environ,
        **secret_env(free_port()),
        "GAPWATCH_KAFKA_BOOTSTRAP": kafka.kafka_bootstrap,
        "GAPWATCH_TOPIC_PREFIX": kafka.topic_prefix,
        "GAPWATCH_INGEST_PORT": str(port),
        "GAPWATCH_INGEST_PRODUCE_TIMEOUT_SECONDS": "1",
        # The local broker speaks PLAINTEXT: the SASL handshake fails on every attempt.
        "GAPWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "GAPWATCH_KAFKA_SASL_MECHANISM": "PLAIN",
        "GAPWATCH_KAFKA_SASL_USERNAME": "gapwatch-svc",
    }
    process = spawn("gapwatch_ingest", env, log_path)
    url = f"http://127.0.0.1:{port}"
    texts: dict[str, str] = {}
    try:
        wait_until_ready(
            "ingest",
            process,
            log_path,
            lambda: log_path.read_text().count("Kafka not reachable") >= 2,
            timeout=60,
        )
        response = httpx.post(
            url + "/v1/events",
            content=orjson.dumps(EXAMPLES["gapwatch.job.arrived.v1"]),
            headers={
                "Authorization": f"Bearer {INGEST_TOKENS[0]}",
                "Content-Type": "application/json",
            },
            timeout=10,
        )
        assert response.status_code == 503, response.text
        texts["POST"] = response.text
        texts |= answers(url, ("/metrics", "/openapi.json", "/readyz"))
        assert texts["GET /readyz"].startswith("503")
    finally:
        stop_process(process)
    texts["log"] = log_path.read_text(errors="replace")
    assert "IllegalSaslState" in texts["log"], "the SASL login was attempted and refused"
    assert_no_secret(texts)


# --- alerter -----------------------------------------------------------------------------------


@dataclass
class EchoingReceiver:
    """Refuses every notification with a 500 whose body quotes the whole request back."""

    requests: list[bytes] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self) -> set[str]:
        return {r.split(b" ", 2)[1].decode() for r in self.requests}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                body = b"receiver refused this request:\n" + request
                writer.write(
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def echoing_receiver() -> AsyncIterator[EchoingReceiver]:
    receiver = EchoingReceiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        await server.wait_closed()


def receivers_config(receiver: EchoingReceiver) -> list[dict[str, Any]]:
    return [
        {
            "name": "hook",
            "type": "webhook",
            "url_env": "GAPWATCH_WEBHOOK_URL",
            "secret_env": "GAPWATCH_WEBHOOK_SECRET",
        },
        {"name": "slack", "type": "slack", "url_env": "SLACK_WEBHOOK_URL"},
        {
            "name": "pagerduty",
            "type": "pagerduty",
            "routing_key_env": "PAGERDUTY_ROUTING_KEY",
            "url": receiver.url + "/v2/enqueue",
        },
    ]


async def test_the_alerter_shows_no_secret(kafka: KafkaSettings, tmp_path: Path):
    async with echoing_receiver() as receiver, fresh_schema() as schema:
        rules = write_rules(tmp_path / "alerts.yaml", [burn_rule()], receivers_config(receiver))
        env = secret_env(receiver.port)
        alerter = await asyncio.to_thread(start_alerter, kafka, tmp_path, schema, rules, **env)
        texts: dict[str, str] = {}
        try:
            await publish_round(kafka, {"billing": (20, 80)}, WINDOWS)
            await eventually(
                lambda: len(receiver.paths()) == 3, 60, "a refused notification per receiver"
            )
            firing = await eventually(
                lambda: alerter.alerts(state="firing"), 30, "the alert to be listed"
            )
            fingerprint = firing[0]["fingerprint"]

            def errors_recorded() -> bool:
                detail = httpx.get(f"{alerter.url}/v1/alerts/{fingerprint}", timeout=10).json()
                deliveries = [d for h in detail["history"] for d in h["deliveries"]]
                return len([d for d in deliveries if d["last_error"]]) == 3

            await eventually(errors_recorded, 30, "the three failures to be recorded")
            async with httpx.AsyncClient(base_url=alerter.url, timeout=10) as http:
                silence = {
                    "matchers": {"team": "support"},
                    "duration_seconds": 60,
                    "created_by": "test",
                    "comment": "secrets test",
                }
                statuses = []
                for authorization in (f"Bearer {ALERTER_TOKEN}x", "", f"Bearer {ALERTER_TOKEN}"):
                    response = await http.post(
                        "/v1/silences", json=silence, headers={"Authorization": authorization}
                    )
                    statuses.append(response.status_code)
                    texts[f"POST silence {authorization!r}"] = f"{response.headers} {response.text}"
                assert statuses == [401, 401, 201]
            texts |= await asyncio.to_thread(
                answers,
                alerter.url,
                (
                    "/metrics",
                    "/openapi.json",
                    "/docs",
                    "/healthz",
                    "/readyz",
                    "/v1/alerts",
                    f"/v1/alerts/{fingerprint}",
                    "/v1/silences",
                ),
            )
        finally:
            stop_process(alerter.process)
        texts["log"] = alerter.log()

    # The receivers did quote the secrets back (the URL paths and the routing key)...
    echoed = b"".join(receiver.requests)
    assert WEBHOOK_TOKEN.encode() in echoed and SLACK_TOKEN.encode() in echoed
    assert PAGERDUTY_KEY.encode() in echoed
    # ...and their answers were logged and stored, redacted.
    assert texts["log"].count("not delivered (HTTP 500: receiver refused this request") >= 3
    assert "[redacted]" in texts[f"GET /v1/alerts/{fingerprint}"]
    assert_no_secret(texts)


@pytest.mark.parametrize(
    ("env", "refusal"),
    [
        (
            {"GAPWATCH_DATABASE_URL": database_url(DB_PASSWORD)},
            "password authentication failed",
        ),
        (
            {
                "GAPWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "GAPWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                "GAPWATCH_KAFKA_SASL_USERNAME": "gapwatch-svc",
            },
            "Unable to bootstrap",
        ),
    ],
    ids=["postgresql", "kafka"],
)
async def test_the_alerter_shows_no_secret_when_a_login_is_refused(
    kafka: KafkaSettings, tmp_path: Path, env: dict[str, str], refusal: str
):
    async with echoing_receiver() as receiver, fresh_schema() as schema:
        rules = write_rules(tmp_path / "alerts.yaml", [burn_rule()], receivers_config(receiver))
        log_path = tmp_path / "alerter.log"
        environment = {
            **os.environ,
            **secret_env(receiver.port),
            "GAPWATCH_KAFKA_BOOTSTRAP": kafka.kafka_bootstrap,
            "GAPWATCH_TOPIC_PREFIX": kafka.topic_prefix,
            "GAPWATCH_ALERTER_DB_SCHEMA": schema,
            "GAPWATCH_ALERTER_RULES_FILE": str(rules),
            "GAPWATCH_ALERTER_PORT": str(free_port()),
            **env,
        }
        process = spawn("gapwatch_alerter", environment, log_path)
        try:
            # A refused login at start is retried, each refusal logged with its reason.
            await eventually(
                lambda: log_path.read_text(errors="replace").count(refusal) >= 2,
                90,
                f"two refusals ({refusal!r}) in the log",
            )
            assert process.poll() is None, "the alerter exited on a refused login"
        finally:
            stop_process(process)
    assert_no_secret({"log": log_path.read_text(errors="replace")})

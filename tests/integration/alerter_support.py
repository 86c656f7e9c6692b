"""Helpers for alerter tests: start it, feed it snapshots, and a webhook that fails on cue."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import yaml

from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.clients import reliable_producer
from gapwatch.kafka.settings import KafkaSettings
from gapwatch_alerter.receivers import verify_signature
from tests.integration.conftest import (
    free_port,
    infra_env,
    spawn,
    stop_process,
    wait_until_ready,
)

WEBHOOK_SECRET = "webhook-secret-for-tests-91c2"
ALERTER_TOKEN = "alerter-token-for-tests-5d1e"


@dataclass
class AlerterProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def readiness(self) -> dict[str, Any] | None:
        """The /readyz body (whatever its status), or None while nothing answers."""
        try:
            return dict(httpx.get(self.url + "/readyz", timeout=5).json())
        except (httpx.TransportError, ValueError):
            return None

    def leading(self) -> bool:
        body = self.readiness()
        return bool(body and body.get("leader") and body.get("status") == "ready")

    def alerts(self, **params: str) -> list[dict[str, Any]]:
        response = httpx.get(self.url + "/v1/alerts", params=params, timeout=10)
        response.raise_for_status()
        return list(response.json()["alerts"])


def start_alerter(
    kafka: KafkaSettings, work: Path, schema: str, rules_file: Path, **env: str
) -> AlerterProcess:
    """An alerter process, once it leads (its /readyz says so)."""
    alerter = spawn_alerter(kafka, work, schema, rules_file, **env)
    wait_until_ready("alerter", alerter.process, alerter.log_path, alerter.leading, timeout=60)
    return alerter


def spawn_alerter(
    kafka: KafkaSettings, work: Path, schema: str, rules_file: Path, **env: str
) -> AlerterProcess:
    """An alerter process, started; not waited for."""
    port = free_port()
    log_path = work / f"alerter-{port}.log"
    environment = {
        **os.environ,
        "GAPWATCH_KAFKA_BOOTSTRAP": kafka.kafka_bootstrap,
        "GAPWATCH_TOPIC_PREFIX": kafka.topic_prefix,
        "GAPWATCH_DATABASE_URL": infra_env()["GAPWATCH_DATABASE_URL"],
        "GAPWATCH_ALERTER_DB_SCHEMA": schema,
        "GAPWATCH_ALERTER_RULES_FILE": str(rules_file),
        "GAPWATCH_ALERTER_PORT": str(port),
        "GAPWATCH_ALERTER_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "GAPWATCH_ALERTER_TOKENS": ALERTER_TOKEN,
        "GAPWATCH_ALERTER_EVAL_SECONDS": "0.2",
        "GAPWATCH_WEBHOOK_SECRET": WEBHOOK_SECRET,
        **env,
    }
    process = spawn("gapwatch_alerter", environment, log_path)
    return AlerterProcess(f"http://127.0.0.1:{port}", process, log_path)


@asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    """A schema name no other test uses; dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        conn = await asyncpg.connect(infra_env()["GAPWATCH_DATABASE_URL"])
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


def write_rules(path: Path, rules: list[dict[str, Any]], receivers: list[dict[str, Any]]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "version": "test",
                "rules": rules,
                "receivers": receivers,
                "default_receivers": [r["name"] for r in receivers],
            }
        )
    )
    return path


def window_record(
    team: str, window: str, met: int, breached: int, as_of: datetime, **extra: Any
) -> dict[str, Any]:
    """A snapshot record as the scorer publishes it on gapwatch.scores.v1."""
    total = met + breached
    return {
        "kind": "window",
        "segment": {"team": team, "region": "emea", "priority": "p2"},
        "promise_kind": extra.pop("promise_kind", "first_response"),
        "window": window,
        "window_seconds": {"5m": 300, "30m": 1800, "1h": 3600, "6h": 21600}.get(window, 86400),
        "as_of": as_of.isoformat(),
        "met": met,
        "breached": breached,
        "delivered_late": 0,
        "at_risk": 0,
        "cancelled": 0,
        "attainment": met / total if total else None,
        "gap_p50": None,
        "gap_p90": None,
        "gap_p99": None,
        "promised_p50": None,
        "promised_p90": None,
        "delivered_p50": None,
        "delivered_p90": None,
        "csat_mean": None,
        "csat_count": 0,
        "nps": None,
        "nps_count": 0,
        "csat_by_gap_bucket": {},
        "ftf_rate": None,
        "ftf_count": 0,
        "latest_breached": extra.pop("latest_breached", []),
        **extra,
    }


async def publish_round(
    kafka: KafkaSettings,
    figures: dict[str, tuple[int, int]],
    windows: tuple[str, ...],
    as_of: datetime | None = None,
) -> None:
    """One snapshot round: every team's (met, breached) in every window, as of now by default."""
    producer = reliable_producer(kafka)
    await producer.start()
    try:
        now = as_of or datetime.now(UTC)
        topic = topic_name(Stream.SCORES, kafka.topic_prefix)
        for team, (met, breached) in figures.items():
            latest = [f"T-{team}-{i}" for i in range(min(breached, 3))]
            for window in windows:
                record = window_record(team, window, met, breached, now, latest_breached=latest)
                await producer.send(topic, orjson.dumps(record), key=f"team={team}".encode())
        await producer.flush()
    finally:
        await producer.stop()


@dataclass
class Received:
    delivery: str
    body: dict[str, Any]
    signed: bool
    answered: int


@dataclass
class FlakyWebhook:
    """An HTTP endpoint that answers 503 to its first `fail_first` requests, then 200."""

    fail_first: int = 0
    requests: list[Received] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def accepted(self) -> list[Received]:
        return [r for r in self.requests if r.answered == 200]

    def accepted_ids(self) -> list[str]:
        return [r.delivery for r in self.accepted()]

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = 503 if len(self.requests) < self.fail_first else 200
                signed = verify_signature(
                    WEBHOOK_SECRET.encode(),
                    headers.get("x-gapwatch-timestamp", ""),
                    body,
                    headers.get("x-gapwatch-signature", ""),
                    now=datetime.now(UTC).timestamp(),
                )
                self.requests.append(
                    Received(
                        headers.get("x-gapwatch-delivery", ""), orjson.loads(body), signed, status
                    )
                )
                reason = b"OK" if status == 200 else b"Service Unavailable"
                writer.write(b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\n\r\n" % (status, reason))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def eventually(check: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Await until `check()` returns something truthy; fail naming `what` after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def burn_rule() -> dict[str, Any]:
    """A first-response burn-rate rule per team, quick to fire and resolve (for 1 s, hold 2 s)."""
    return {
        "name": "first-response-burn",
        "promise_kinds": ["first_response"],
        "group_by": ["team"],
        "condition": {"type": "burn_rate", "objective": 0.95, "min_events": 10},
        "for": "1s",
        "hold": "2s",
    }


def webhook_receiver(url: str) -> dict[str, Any]:
    return {"name": "hook", "type": "webhook", "url": url, "secret_env": "GAPWATCH_WEBHOOK_SECRET"}


@dataclass
class Rig:
    """A running alerter with its own schema and rules, notifying a webhook."""

    kafka: KafkaSettings
    work: Path
    schema: str
    rules: Path
    hook: FlakyWebhook
    alerter: AlerterProcess

    async def restart(self) -> None:
        """Start the alerter again on the same schema and rules (after the test stopped it)."""
        self.alerter = await asyncio.to_thread(
            start_alerter, self.kafka, self.work, self.schema, self.rules
        )

    def states(self) -> dict[str, int]:
        """How many firing and resolved notifications the webhook accepted."""
        counts: dict[str, int] = {}
        for r in self.hook.accepted():
            state = r.body["transition"]["to_state"]
            counts[state] = counts.get(state, 0) + 1
        return counts


async def committed(rig: Rig) -> int:
    """How many snapshot records the alerter has committed as read (in its schema's offsets)."""
    conn = await asyncpg.connect(infra_env()["GAPWATCH_DATABASE_URL"])
    try:
        query = (
            f"SELECT coalesce(sum(next_offset), 0) FROM {rig.schema}.consumer_offsets "
            "WHERE topic = $1"
        )
        total = await conn.fetchval(query, topic_name(Stream.SCORES, rig.kafka.topic_prefix))
    finally:
        await conn.close()
    return int(total)


@asynccontextmanager
async def alerter_rig(kafka: KafkaSettings, work: Path, fail_first: int = 0) -> AsyncIterator[Rig]:
    """The alerter with `burn_rule` and a webhook refusing its first `fail_first` calls."""
    hook = FlakyWebhook(fail_first=fail_first)
    await hook.start()
    rules = write_rules(work / "alerts.yaml", [burn_rule()], [webhook_receiver(hook.url)])
    try:
        async with fresh_schema() as schema:
            alerter = await asyncio.to_thread(start_alerter, kafka, work, schema, rules)
            rig = Rig(kafka, work, schema, rules, hook, alerter)
            try:
                yield rig
            finally:
                stop_process(rig.alerter.process)
    finally:
        await hook.stop()

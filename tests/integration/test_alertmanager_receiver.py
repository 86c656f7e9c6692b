"""Receivers against a real Alertmanager (deploy/local/alertmanager.sh) and local HTTP fakes."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from gapwatch.core.alerts.lifecycle import AlertState, Transition, fingerprint
from gapwatch.core.alerts.rules import AlertsConfig, Severity
from gapwatch_alerter.receivers import (
    AlertmanagerClient,
    ReceiverClient,
    build_receivers,
    verify_signature,
)
from tests.integration.conftest import Alertmanager, alertmanager_script

pytestmark = pytest.mark.integration

ALERTER = "http://alerter.test:8090"
HOOK_SECRET = "integration-hook-secret-5b1c"
ROUTING_KEY = "integrationroutingkey00000000001"


# --- helpers ------------------------------------------------------------------------------------


def config(*receivers: dict[str, Any]) -> AlertsConfig:
    return AlertsConfig.model_validate(
        {
            "version": "test",
            "rules": [{"name": "r1", "condition": {"type": "overdue", "above": 0}}],
            "receivers": list(receivers),
        }
    )


def receivers(http: httpx.AsyncClient, *configs: dict[str, Any]) -> dict[str, ReceiverClient]:
    env = {"HOOK_SECRET": HOOK_SECRET, "PD_KEY": ROUTING_KEY, "SLACK_URL": "http://127.0.0.1:9/x"}
    return build_receivers(config(*configs), env, http, alerter_url=ALERTER)


def firing(rule: str, **changes: Any) -> Transition:
    """A transition to firing, now; each test uses its own rule so alerts never collide."""
    labels = changes.pop("labels", {"team": "support-eu", "channel": "email"})
    at = changes.pop("at", datetime.now(UTC))
    fp = fingerprint(rule, labels)
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "fingerprint": fp,
        "rule": rule,
        "labels": labels,
        "severity": Severity.PAGE,
        "from_state": AlertState.PENDING,
        "to_state": AlertState.FIRING,
        "at": at,
        "sequence": 2,
        "summary": f"{rule} is burning its budget",
        "figures": {"burn_rate_1h": 15.2, "objective": 0.95},
        "window": "1h",
        "latest_breached": ("T-10442", "T-10439"),
        "firing_since": at,
        "runbook_url": "https://runbooks.example.com/burn",
        "dashboard_url": "https://grafana.example.com/d/gapwatch",
        **changes,
    }
    return Transition(**values)


def resolved(t: Transition) -> Transition:
    return replace(
        t,
        id=str(uuid.uuid4()),
        from_state=AlertState.FIRING,
        to_state=AlertState.RESOLVED,
        at=datetime.now(UTC),
        sequence=t.sequence + 1,
    )


async def am_alerts(http: httpx.AsyncClient, am: Alertmanager, query: str = "") -> list[Any]:
    response = await http.get(f"{am.url}/api/v2/alerts{query}", timeout=10)
    assert response.status_code == 200, response.text
    alerts: list[Any] = response.json()
    return alerts


def by_fingerprint(alerts: list[Any], fp: str) -> list[Any]:
    return [a for a in alerts if a["labels"].get("gapwatch_fingerprint") == fp]


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


# --- Alertmanager -------------------------------------------------------------------------------


async def test_firing_then_resolved_through_alertmanager(alertmanager: Alertmanager):
    rule = f"am_{uuid.uuid4().hex[:8]}"
    t = firing(rule)
    async with httpx.AsyncClient() as http:
        client = receivers(
            http,
            {"name": "am", "type": "alertmanager", "url": alertmanager.url, "resend_seconds": 60},
        )["am"]
        outcome = await client.deliver(t)
        assert (outcome.ok, outcome.status, outcome.error) == (True, 200, "")

        for query in ("", "?active=true"):
            (alert,) = by_fingerprint(await am_alerts(http, alertmanager, query), t.fingerprint)
            assert alert["labels"] == {
                "alertname": rule,
                "severity": "page",
                "gapwatch_fingerprint": t.fingerprint,
                "team": "support-eu",
                "channel": "email",
            }
            assert alert["annotations"] == {
                "summary": t.summary,
                "runbook_url": t.runbook_url,
                "dashboard_url": t.dashboard_url,
                "figures": '{"burn_rate_1h":15.2,"objective":0.95}',
                "window": "1h",
                "latest_breached": "T-10442,T-10439",
            }
            assert alert["status"]["state"] == "active"
            assert alert["generatorURL"] == f"{ALERTER}/v1/alerts/{t.fingerprint}"
            # Alertmanager keeps milliseconds.
            assert abs(parse(alert["startsAt"]) - t.at) < timedelta(milliseconds=1)
            ends = parse(alert["endsAt"]) - t.at
            assert timedelta(seconds=239) < ends < timedelta(seconds=241)  # ~ at + 4 x 60s

        outcome = await client.deliver(resolved(t))
        assert outcome.ok, outcome
        # endsAt is in the past now: Alertmanager's API leaves the alert out whatever the filter.
        for query in ("", "?active=true", "?active=false&silenced=true&inhibited=true"):
            assert by_fingerprint(await am_alerts(http, alertmanager, query), t.fingerprint) == []


async def test_escalation_replaces_the_lower_severity_alert(alertmanager: Alertmanager):
    rule = f"am_{uuid.uuid4().hex[:8]}"
    ticket = firing(rule, severity=Severity.TICKET)
    page = replace(
        ticket,
        id=str(uuid.uuid4()),
        from_state=AlertState.FIRING,
        severity=Severity.PAGE,
        at=datetime.now(UTC),
        sequence=3,
    )
    async with httpx.AsyncClient() as http:
        client = receivers(http, {"name": "am", "type": "alertmanager", "url": alertmanager.url})
        assert (await client["am"].deliver(ticket)).ok
        (alert,) = by_fingerprint(await am_alerts(http, alertmanager), ticket.fingerprint)
        assert alert["labels"]["severity"] == "ticket"
        assert (await client["am"].deliver(page)).ok
        alerts = by_fingerprint(await am_alerts(http, alertmanager), ticket.fingerprint)
        assert [a["labels"]["severity"] for a in alerts] == ["page"]


async def test_resend_keeps_firing_alerts_alive(alertmanager: Alertmanager):
    """Alertmanager drops an alert once its endsAt passes; only re-sent ones stay."""
    kept = firing(f"am_{uuid.uuid4().hex[:8]}")
    dropped = firing(f"am_{uuid.uuid4().hex[:8]}")
    async with httpx.AsyncClient() as http:
        client = receivers(
            http,
            {"name": "am", "type": "alertmanager", "url": alertmanager.url, "resend_seconds": 0.5},
        )["am"]
        assert isinstance(client, AlertmanagerClient)
        assert (await client.deliver(kept)).ok
        assert (await client.deliver(dropped)).ok
        assert len(by_fingerprint(await am_alerts(http, alertmanager), dropped.fingerprint)) == 1

        deadline = time.monotonic() + 15  # `dropped` ends ~2s after delivery
        while by_fingerprint(await am_alerts(http, alertmanager), dropped.fingerprint):
            assert time.monotonic() < deadline, "an alert that was not re-sent never expired"
            assert (await client.resend([kept])).ok
            await asyncio.sleep(0.25)  # the re-send cadence under test, not synchronisation

        (alert,) = by_fingerprint(await am_alerts(http, alertmanager), kept.fingerprint)
        assert alert["status"]["state"] == "active"
        assert parse(alert["endsAt"]) > datetime.now(UTC)


async def test_alertmanager_wrong_path_and_stopped_server(alertmanager: Alertmanager):
    t = firing(f"am_{uuid.uuid4().hex[:8]}")
    async with httpx.AsyncClient() as http:
        clients = receivers(
            http,
            {"name": "wrong", "type": "alertmanager", "url": alertmanager.url + "/nope"},
            {"name": "am", "type": "alertmanager", "url": alertmanager.url, "timeout_seconds": 2},
        )
        outcome = await clients["wrong"].deliver(t)
        assert (outcome.ok, outcome.retriable, outcome.status) == (False, False, 404)

        stopped = alertmanager_script("stop", str(alertmanager.dir))
        assert stopped.returncode == 0, stopped.stderr
        assert not (alertmanager.dir / "alertmanager.pid").exists()
        outcome = await clients["am"].deliver(t)
        assert (outcome.ok, outcome.retriable, outcome.status) == (False, True, None)
        assert outcome.error == "connect error"


# --- HTTP fakes ---------------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Responder = Callable[[Received], Awaitable[tuple[int, bytes]]]


@dataclass
class FakeEndpoint:
    """A tiny HTTP/1.1 server on 127.0.0.1 that records requests and answers via `respond`."""

    respond: Responder
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while line := await reader.readline():  # keep-alive: httpx reuses the connection
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Received(method, path, headers, body)
                self.received.append(request)
                status, payload = await self.respond(request)
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeEndpoint]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self
        finally:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()


async def test_webhook_signature_verifies_over_the_received_bytes():
    async def check(request: Received) -> tuple[int, bytes]:
        good = verify_signature(
            HOOK_SECRET.encode(),
            request.headers["x-gapwatch-timestamp"],
            request.body,
            request.headers["x-gapwatch-signature"],
            now=time.time(),
        )
        return (204, b"") if good else (401, b'{"error":"bad signature"}')

    t = firing(f"hook_{uuid.uuid4().hex[:8]}")
    async with FakeEndpoint(check).running() as hook, httpx.AsyncClient() as http:
        right = receivers(
            http,
            {
                "name": "hook",
                "type": "webhook",
                "url": hook.url + "/in",
                "secret_env": "HOOK_SECRET",
            },
        )["hook"]
        outcome = await right.deliver(t)
        assert (outcome.ok, outcome.status) == (True, 204), outcome

        (request,) = hook.received
        assert (request.method, request.path) == ("POST", "/in")
        assert request.headers["x-gapwatch-delivery"] == request.headers["idempotency-key"] == t.id
        sent = orjson.loads(request.body)
        assert sent == {"version": "1", "transition": t.as_dict()}
        assert Transition.from_dict(sent["transition"]) == t

        wrong = build_receivers(
            config({"name": "hook", "type": "webhook", "url": hook.url, "secret_env": "K"}),
            {"K": "not-the-shared-secret"},
            http,
            alerter_url=ALERTER,
        )["hook"]
        outcome = await wrong.deliver(t)
        assert (outcome.ok, outcome.retriable, outcome.status) == (False, False, 401)
        assert outcome.error == 'HTTP 401: {"error":"bad signature"}'


async def test_pagerduty_shaped_endpoint():
    incidents: dict[str, str] = {}
    answers = iter([429])  # the first event is throttled, as PagerDuty may

    async def events_v2(request: Received) -> tuple[int, bytes]:
        event = orjson.loads(request.body)
        if event.get("routing_key") != ROUTING_KEY:
            # A careless API might echo the key; the outcome must not carry it.
            return 400, orjson.dumps(
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": [f"unknown routing_key {event.get('routing_key')}"],
                }
            )
        if (status := next(answers, 202)) != 202:
            return status, b""
        action, key = event["event_action"], event["dedup_key"]
        if action == "trigger":
            assert event["payload"]["severity"] in ("critical", "error", "warning", "info")
            assert event["payload"]["source"] and event["payload"]["summary"]
            incidents[key] = "triggered"
        elif action == "resolve":
            assert incidents.get(key) == "triggered"
            incidents[key] = "resolved"
        else:
            return 400, b'{"status":"invalid event"}'
        return 202, orjson.dumps(
            {"status": "success", "message": "Event processed", "dedup_key": key}
        )

    t = firing(f"pd_{uuid.uuid4().hex[:8]}")
    async with FakeEndpoint(events_v2).running() as pd, httpx.AsyncClient() as http:
        client = receivers(
            http,
            {
                "name": "pd",
                "type": "pagerduty",
                "routing_key_env": "PD_KEY",
                "url": pd.url + "/v2/enqueue",
            },
        )["pd"]
        throttled = await client.deliver(t)
        assert (throttled.ok, throttled.retriable, throttled.status) == (False, True, 429)
        accepted = await client.deliver(t)  # the retry
        assert (accepted.ok, accepted.status) == (True, 202)
        assert incidents == {t.fingerprint: "triggered"}
        assert (await client.deliver(resolved(t))).ok
        assert incidents == {t.fingerprint: "resolved"}
        assert [r.path for r in pd.received] == ["/v2/enqueue"] * 3
        assert [orjson.loads(r.body)["event_action"] for r in pd.received] == [
            "trigger",
            "trigger",
            "resolve",
        ]

        bad_key = build_receivers(
            config({"name": "pd", "type": "pagerduty", "routing_key_env": "K", "url": pd.url}),
            {"K": "wrongkey-0123456789abcdef012345"},
            http,
            alerter_url=ALERTER,
        )["pd"]
        rejected = await bad_key.deliver(t)
        assert (rejected.ok, rejected.retriable, rejected.status) == (False, False, 400)
        assert "invalid event" in rejected.error
        assert "wrongkey" not in rejected.error


async def test_slack_shaped_endpoint_and_timeout():
    hang = asyncio.Event()

    async def slack(request: Received) -> tuple[int, bytes]:
        message = orjson.loads(request.body)
        if message["text"].startswith("[RESOLVED]"):
            await hang.wait()  # never set: the receiver's timeout must end the wait
        assert message["text"].startswith("[FIRING page] ") and message["blocks"]
        return 200, b"ok"

    t = firing(f"slack_{uuid.uuid4().hex[:8]}")
    async with FakeEndpoint(slack).running() as endpoint, httpx.AsyncClient() as http:
        client = build_receivers(
            config({"name": "chat", "type": "slack", "url_env": "S", "timeout_seconds": 0.5}),
            {"S": endpoint.url + "/services/T1/B2/secret"},
            http,
            alerter_url=ALERTER,
        )["chat"]
        assert (await client.deliver(t)).ok
        started = time.monotonic()
        outcome = await client.deliver(resolved(t))
        assert time.monotonic() - started < 5
        assert (outcome.ok, outcome.retriable, outcome.status) == (False, True, None)
        assert outcome.error == "timeout after 0.5s"

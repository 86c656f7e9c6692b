"""Receiver requests: bodies, headers and signatures per kind; outcomes per HTTP answer."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gapwatch.core.alerts.lifecycle import AlertState, Transition
from gapwatch.core.alerts.rules import AlertsConfig, Severity
from gapwatch_alerter.receivers import (
    AlertmanagerClient,
    DeliveryOutcome,
    PagerDutyClient,
    ReceiverClient,
    ReceiverConfigError,
    SlackClient,
    WebhookClient,
    build_receivers,
    sign,
    standard_secret,
    verify_signature,
)

AT = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
SINCE = AT - timedelta(minutes=10)
SECRET = "hmac-secret-0f9e8d"
SLACK_URL = "https://hooks.slack.com/services/T0001/B0002/slacktokenXYZ123"
ROUTING_KEY = "pdroutingkey0123456789abcdef0123"
ALERTER = "http://alerter.internal:8090"
ENV = {"HOOK_SECRET": SECRET, "SLACK_URL": SLACK_URL, "PD_KEY": ROUTING_KEY}


def transition(to: AlertState = AlertState.FIRING, **changes: Any) -> Transition:
    base = Transition(
        id="0b7f1d2e-9c4a-5e1b-8f3d-2a6c4e8b0d1f",
        fingerprint="4c2d9e1f0a8b7c6d5e4f3a2b1c0d9e8f",
        rule="support_first_response_burn",
        labels={"team": "support-eu", "channel": "email"},
        severity=Severity.PAGE,
        from_state=AlertState.PENDING if to is AlertState.FIRING else AlertState.FIRING,
        to_state=to,
        at=AT,
        sequence=2 if to is AlertState.FIRING else 3,
        summary="First-response SLO burning 15x budget (team=support-eu, channel=email)",
        figures={"burn_rate_1h": 15.2, "burn_rate_5m": 18.0, "objective": 0.95},
        window="1h",
        latest_breached=tuple(f"T-{10450 - i}" for i in range(12)),
        firing_since=SINCE,
        runbook_url="https://runbooks.example.com/first-response",
        dashboard_url="https://grafana.example.com/d/gapwatch?team=support-eu&x=1",
    )
    return replace(base, **changes)


def config(receivers: list[dict[str, Any]]) -> AlertsConfig:
    return AlertsConfig.model_validate(
        {
            "version": "test",
            "rules": [{"name": "r1", "condition": {"type": "overdue", "above": 0}}],
            "receivers": receivers,
        }
    )


ALL_RECEIVERS: list[dict[str, Any]] = [
    {
        "name": "hook",
        "type": "webhook",
        "url": "https://hooks.example.com/gw",
        "secret_env": "HOOK_SECRET",
    },
    {"name": "slack", "type": "slack", "url_env": "SLACK_URL", "timeout_seconds": 3},
    {"name": "pd", "type": "pagerduty", "routing_key_env": "PD_KEY"},
    {"name": "am", "type": "alertmanager", "url": "http://127.0.0.1:9093/", "resend_seconds": 30},
]


def clients(
    handler: Callable[[httpx.Request], httpx.Response] | None = None,
) -> tuple[dict[str, ReceiverClient], httpx.AsyncClient]:
    http = httpx.AsyncClient(
        transport=httpx.MockTransport(handler or (lambda r: httpx.Response(200)))
    )
    return build_receivers(config(ALL_RECEIVERS), ENV, http, alerter_url=ALERTER + "/"), http


def body(request: tuple[str, dict[str, str], bytes]) -> Any:
    return orjson.loads(request[2])


# --- building -----------------------------------------------------------------------------------


def test_build_receivers_makes_one_client_per_receiver():
    built, _ = clients()
    assert {name: type(c) for name, c in built.items()} == {
        "hook": WebhookClient,
        "slack": SlackClient,
        "pd": PagerDutyClient,
        "am": AlertmanagerClient,
    }
    assert built["slack"].timeout == 3.0
    assert built["hook"].timeout == 5.0


@pytest.mark.parametrize(
    ("receiver", "variable"),
    [
        (ALL_RECEIVERS[0], "HOOK_SECRET"),
        (ALL_RECEIVERS[1], "SLACK_URL"),
        (ALL_RECEIVERS[2], "PD_KEY"),
    ],
)
def test_missing_secret_names_variable_and_receiver(receiver: dict[str, Any], variable: str):
    env = {k: v for k, v in ENV.items() if k != variable}
    with pytest.raises(ReceiverConfigError) as error:
        build_receivers(config([receiver]), env, httpx.AsyncClient(), alerter_url=ALERTER)
    assert error.value.variable == variable
    assert error.value.receiver == receiver["name"]
    assert variable in str(error.value) and repr(receiver["name"]) in str(error.value)


def test_empty_secret_counts_as_missing():
    with pytest.raises(ReceiverConfigError, match="PD_KEY"):
        build_receivers(
            config([ALL_RECEIVERS[2]]), {"PD_KEY": "  "}, httpx.AsyncClient(), alerter_url=ALERTER
        )


def test_bad_url_from_environment_is_not_quoted():
    env = {**ENV, "SLACK_URL": "hooks.slack.com/services/T0001/B0002/secretpart"}
    with pytest.raises(ReceiverConfigError) as error:
        build_receivers(config([ALL_RECEIVERS[1]]), env, httpx.AsyncClient(), alerter_url=ALERTER)
    assert "SLACK_URL" in str(error.value)
    assert "secretpart" not in str(error.value)


def test_webhook_url_from_environment():
    receiver = {
        "name": "hook",
        "type": "webhook",
        "url_env": "HOOK_URL",
        "secret_env": "HOOK_SECRET",
    }
    env = {**ENV, "HOOK_URL": "https://in.example.com/t/abc"}
    built = build_receivers(config([receiver]), env, httpx.AsyncClient(), alerter_url=ALERTER)
    assert built["hook"].request(transition())[0] == "https://in.example.com/t/abc"


def test_webhook_without_any_url_is_a_config_error():
    receiver = {"name": "hook", "type": "webhook", "secret_env": "HOOK_SECRET"}
    with pytest.raises(ReceiverConfigError, match="url"):
        build_receivers(config([receiver]), ENV, httpx.AsyncClient(), alerter_url=ALERTER)


@pytest.mark.parametrize("state", [AlertState.PENDING, AlertState.INACTIVE])
@pytest.mark.parametrize("name", ["hook", "slack", "pd", "am"])
def test_unnotified_states_are_refused(name: str, state: AlertState):
    built, _ = clients()
    with pytest.raises(ValueError, match="only firing and resolved"):
        built[name].request(transition(state))


# --- webhook ------------------------------------------------------------------------------------


def test_webhook_request_is_signed_json_of_the_transition():
    built, _ = clients()
    hook = built["hook"]
    assert isinstance(hook, WebhookClient)
    t = transition()
    url, headers, raw = hook.request(t, timestamp=1772442900)
    assert url == "https://hooks.example.com/gw"
    assert raw == orjson.dumps({"version": "1", "transition": t.as_dict()})
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Gapwatch-Delivery"] == headers["Idempotency-Key"] == t.id
    assert headers["X-Gapwatch-Timestamp"] == "1772442900"
    assert headers["X-Gapwatch-Signature"] == sign(SECRET.encode(), "1772442900", raw)
    assert headers["X-Gapwatch-Signature"].startswith("sha256=")
    assert len(headers["X-Gapwatch-Signature"]) == len("sha256=") + 64
    assert hook.request(t, timestamp=1772442900) == (url, headers, raw)  # deterministic
    assert SECRET not in str(headers) and SECRET.encode() not in raw


def test_webhook_signature_verifies_and_rejects_tampering():
    built, _ = clients()
    hook = built["hook"]
    assert isinstance(hook, WebhookClient)
    _, headers, raw = hook.request(transition(), timestamp=1_000_000)
    ts, sig = headers["X-Gapwatch-Timestamp"], headers["X-Gapwatch-Signature"]
    key = SECRET.encode()
    assert verify_signature(key, ts, raw, sig, now=1_000_000)
    assert verify_signature(key, ts, raw, sig, now=1_000_299)
    assert not verify_signature(key, ts, raw, sig, now=1_000_301)  # replayed too late
    assert not verify_signature(key, ts, raw, sig, now=999_000)  # from the future
    assert not verify_signature(key, ts, raw + b" ", sig, now=1_000_000)
    assert not verify_signature(b"other", ts, raw, sig, now=1_000_000)
    assert not verify_signature(key, "1000001", raw, sig, now=1_000_000)  # timestamp is signed
    assert not verify_signature(key, ts, raw, sig.replace("sha256=", "sha1="), now=1_000_000)
    assert not verify_signature(key, "1e6", raw, sig, now=1_000_000)
    assert not verify_signature(key, "", raw, sig, now=1_000_000)


@pytest.mark.parametrize(
    "secret", [SECRET.encode(), b"whsec_" + base64.b64encode(b"\x00\xffkey-bytes-from-a-generator")]
)
def test_webhooks_verify_with_the_standard_webhooks_library(secret: bytes):
    """Issue 24: receivers verify with a maintained Standard Webhooks library in their own
    language; here the reference Python one, with the secret in its `whsec_` form."""
    hook = WebhookClient("hook", httpx.AsyncClient(), url="http://x", secret=secret, timeout=1)
    t = transition()
    now = int(datetime.now(UTC).timestamp())
    _, headers, raw = hook.request(t, timestamp=now)
    verifier = Webhook(standard_secret(secret))
    assert verifier.verify(raw, headers) == orjson.loads(raw)
    assert headers["webhook-id"] == t.id and headers["webhook-timestamp"] == str(now)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(raw + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(standard_secret(b"another secret")).verify(raw, headers)
    _, old, raw_old = hook.request(t, timestamp=now - 3600)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(raw_old, old)  # a replay an hour late
    if secret.startswith(b"whsec_"):
        assert standard_secret(secret) == secret.decode()


def test_webhook_timestamp_defaults_to_the_clock():
    hook = WebhookClient(
        "hook", httpx.AsyncClient(), url="http://x", secret=b"k", timeout=1, clock=lambda: 1234.9
    )
    assert hook.request(transition())[1]["X-Gapwatch-Timestamp"] == "1234"


# --- slack --------------------------------------------------------------------------------------


def test_slack_firing_message():
    built, _ = clients()
    url, headers, _ = request = built["slack"].request(transition())
    message = body(request)
    assert url == SLACK_URL
    assert headers == {"Content-Type": "application/json"}
    assert message["text"] == "[FIRING page] " + transition().summary
    blocks = message["blocks"]
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"] == "[FIRING page] support_first_response_burn"
    rendered = orjson.dumps(blocks).decode()
    for expected in (
        "`channel=email`",
        "`team=support-eu`",
        "*Window*\\n1h",
        "burn_rate_1h",
        "15.2",
        "*Firing since*\\n2026-03-02T09:05:00Z",
        "<https://runbooks.example.com/first-response|Runbook>",
        "<https://grafana.example.com/d/gapwatch?team=support-eu&amp;x=1|Dashboard>",
        transition().id,
    ):
        assert expected in rendered, expected
    # The 10 newest breached ids (newest first), then how many more.
    assert "`T-10441`" in rendered and "`T-10440`" not in rendered and "and 2 more" in rendered


def test_slack_resolved_message_and_limits():
    t = transition(AlertState.RESOLVED, rule="r" * 200, summary="<!channel> & done")
    message = body(SlackClient("s", httpx.AsyncClient(), url=SLACK_URL, timeout=1).request(t))
    assert message["text"] == "[RESOLVED] <!channel> & done"  # fallback text is not mrkdwn
    assert len(message["blocks"][0]["text"]["text"]) <= 150
    rendered = orjson.dumps(message["blocks"]).decode()
    assert "&lt;!channel&gt; &amp; done" in rendered and "<!channel>" not in rendered
    assert "*Resolved at*" in rendered
    for block in message["blocks"]:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= 3000
        for field in block.get("fields", []):
            assert len(field["text"]) <= 2000
    assert len(message["blocks"]) <= 50


def test_slack_without_summary_uses_rule_and_labels():
    t = transition(summary="", latest_breached=(), figures={}, runbook_url="", dashboard_url="")
    message = body(SlackClient("s", httpx.AsyncClient(), url=SLACK_URL, timeout=1).request(t))
    assert message["text"] == (
        "[FIRING page] support_first_response_burn (channel=email, team=support-eu)"
    )
    rendered = orjson.dumps(message["blocks"]).decode()
    assert "Latest breached" not in rendered and "Figures" not in rendered
    assert "Runbook" not in rendered


# --- pagerduty ----------------------------------------------------------------------------------


def test_pagerduty_trigger_event():
    built, _ = clients()
    url, headers, _ = request = built["pd"].request(transition())
    event = body(request)
    assert url == "https://events.pagerduty.com/v2/enqueue"
    assert headers == {"Content-Type": "application/json"}
    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == transition().fingerprint
    payload = event["payload"]
    assert payload["summary"] == "[FIRING page] " + transition().summary
    assert payload["source"] == "gapwatch"
    assert payload["severity"] == "critical"
    assert payload["timestamp"] == "2026-03-02T09:15:00Z"
    assert payload["component"] == payload["class"] == "support_first_response_burn"
    assert payload["group"] == "support-eu"
    details = payload["custom_details"]
    assert details["labels"] == {"team": "support-eu", "channel": "email"}
    assert details["figures"] == transition().figures
    assert details["window"] == "1h"
    assert details["latest_breached"] == list(transition().latest_breached)
    assert details["transition_id"] == transition().id
    assert event["links"] == [
        {"href": transition().dashboard_url, "text": "Dashboard"},
        {"href": transition().runbook_url, "text": "Runbook"},
    ]
    assert event["client_url"] == f"{ALERTER}/v1/alerts/{transition().fingerprint}"


def test_pagerduty_resolve_event_shares_the_dedup_key():
    built, _ = clients()
    trigger = body(built["pd"].request(transition()))
    resolve = body(built["pd"].request(transition(AlertState.RESOLVED)))
    assert resolve["event_action"] == "resolve"
    assert resolve["dedup_key"] == trigger["dedup_key"]
    assert resolve["payload"]["summary"].startswith("[RESOLVED] ")


@pytest.mark.parametrize(
    ("severity", "expected"),
    [(Severity.PAGE, "critical"), (Severity.TICKET, "warning"), (Severity.INFO, "info")],
)
def test_pagerduty_severity(severity: Severity, expected: str):
    built, _ = clients()
    assert (
        body(built["pd"].request(transition(severity=severity)))["payload"]["severity"] == expected
    )


def test_pagerduty_limits_and_optional_fields():
    built, _ = clients()
    t = transition(summary="x" * 5000, labels={"channel": "chat"}, runbook_url="", dashboard_url="")
    event = body(built["pd"].request(t))
    assert len(event["payload"]["summary"]) == 1024
    assert "group" not in event["payload"]  # no team label
    assert "links" not in event


# --- alertmanager -------------------------------------------------------------------------------


def am_client(resend: float = 30.0) -> AlertmanagerClient:
    return AlertmanagerClient(
        "am",
        httpx.AsyncClient(),
        url="http://127.0.0.1:9093/",
        resend_seconds=resend,
        timeout=5,
        alerter_url=ALERTER,
    )


def test_alertmanager_firing_alert():
    url, headers, _ = request = am_client().request(transition())
    alerts = body(request)
    assert url == "http://127.0.0.1:9093/api/v2/alerts"
    assert headers == {"Content-Type": "application/json"}
    assert alerts == [
        {
            "labels": {
                "team": "support-eu",
                "channel": "email",
                "alertname": "support_first_response_burn",
                "severity": "page",
                "gapwatch_fingerprint": transition().fingerprint,
            },
            "annotations": {
                "summary": transition().summary,
                "runbook_url": transition().runbook_url,
                "dashboard_url": transition().dashboard_url,
                "figures": '{"burn_rate_1h":15.2,"burn_rate_5m":18.0,"objective":0.95}',
                "window": "1h",
                "latest_breached": ",".join(transition().latest_breached),
            },
            "startsAt": "2026-03-02T09:05:00Z",
            "endsAt": "2026-03-02T09:17:00Z",  # at + 4 x 30s
            "generatorURL": f"{ALERTER}/v1/alerts/{transition().fingerprint}",
        }
    ]


def test_alertmanager_resolved_alert_ends_at_the_transition():
    (alert,) = body(am_client().request(transition(AlertState.RESOLVED)))
    assert alert["startsAt"] == "2026-03-02T09:05:00Z"
    assert alert["endsAt"] == "2026-03-02T09:15:00Z"
    assert alert["labels"]["severity"] == "page"


def test_alertmanager_late_delivery_still_fires():
    later = AT + timedelta(hours=1)
    (alert,) = body(am_client().request(transition(), now=later))
    assert alert["endsAt"] == "2026-03-02T10:17:00Z"
    (resolved,) = body(am_client().request(transition(AlertState.RESOLVED), now=later))
    assert resolved["endsAt"] == "2026-03-02T09:15:00Z"


def test_alertmanager_identity_labels_win_and_empty_values_drop():
    t = transition(labels={"severity": "x", "alertname": "y", "region": ""}, figures={}, window="")
    (alert,) = body(am_client().request(t))
    assert alert["labels"]["severity"] == "page"
    assert alert["labels"]["alertname"] == t.rule
    assert "region" not in alert["labels"]
    assert "figures" not in alert["annotations"] and "window" not in alert["annotations"]


def test_alertmanager_escalation_resolves_the_lower_severities():
    t = transition(from_state=AlertState.FIRING, severity=Severity.PAGE)
    alerts = body(am_client().request(t, now=AT))
    assert [(a["labels"]["severity"], a["endsAt"]) for a in alerts] == [
        ("page", "2026-03-02T09:17:00Z"),
        ("ticket", "2026-03-02T09:15:00Z"),
        ("info", "2026-03-02T09:15:00Z"),
    ]


def test_alertmanager_resend_request():
    client = am_client(resend=60)
    other = transition(fingerprint="f" * 32, labels={"team": "billing"}, at=AT - timedelta(days=1))
    url, _, raw = client.resend_request([transition(), other], now=AT)
    alerts = orjson.loads(raw)
    assert url.endswith("/api/v2/alerts")
    assert [a["labels"]["gapwatch_fingerprint"] for a in alerts] == [
        transition().fingerprint,
        "f" * 32,
    ]
    assert {a["endsAt"] for a in alerts} == {"2026-03-02T09:19:00Z"}  # now + 4 x 60s
    with pytest.raises(ValueError, match="only firing"):
        client.resend_request([transition(AlertState.RESOLVED)], now=AT)


async def test_alertmanager_resend_of_nothing_sends_nothing():
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = AlertmanagerClient(
            "am", http, url="http://am", resend_seconds=60, timeout=5, alerter_url=ALERTER
        )
        assert await client.resend([]) == DeliveryOutcome(True, False, None, "")
        assert requests == []
        assert (await client.resend([transition()])).ok
        assert len(requests) == 1


# --- delivery outcomes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "ok", "retriable"),
    [
        (200, True, False),
        (202, True, False),
        (301, False, False),
        (400, False, False),
        (401, False, False),
        (404, False, False),
        (408, False, True),
        (425, False, True),
        (429, False, True),
        (500, False, True),
        (503, False, True),
    ],
)
async def test_outcome_by_status(status: int, ok: bool, retriable: bool):
    built, http = clients(lambda r: httpx.Response(status, text="nope" if not ok else "ok"))
    async with http:
        for client in built.values():
            outcome = await client.deliver(transition())
            assert (outcome.ok, outcome.retriable, outcome.status) == (ok, retriable, status)
            assert outcome.error == ("" if ok else f"HTTP {status}: nope")


async def test_errors_redact_secrets_echoed_by_the_server():
    def echo(request: httpx.Request) -> httpx.Response:
        # An error page quoting the path, and an API quoting the routing key.
        return httpx.Response(
            404, text=f"Cannot POST {request.url.path} {request.content.decode()}"
        )

    built, http = clients(echo)
    async with http:
        for name in ("slack", "pd", "hook"):
            outcome = await built[name].deliver(transition())
            assert not outcome.retriable
            assert outcome.error.startswith("HTTP 404: Cannot POST")
            for secret in (
                SLACK_URL,
                "/services/T0001/B0002/slacktokenXYZ123",
                ROUTING_KEY,
                SECRET,
            ):
                assert secret not in outcome.error
            assert len(outcome.error) <= 220


async def test_timeout_and_connect_errors_are_retriable():
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError(f"bad answer from {request.url}", request=request)

    for handler, error in (
        (timeout, "timeout after 3.0s"),
        (refused, "connect error"),
        (broken, "transport error (RemoteProtocolError)"),
    ):
        built, http = clients(handler)
        async with http:
            outcome = await built["slack"].deliver(transition())
        assert outcome == DeliveryOutcome(False, True, None, error)


async def test_delivery_failure_logs_name_not_url(caplog: pytest.LogCaptureFixture):
    built, http = clients(lambda r: httpx.Response(500))
    async with http:
        with caplog.at_level("WARNING", logger="gapwatch_alerter.receivers"):
            await built["slack"].deliver(transition())
    assert "receiver slack (slack)" in caplog.text
    assert "slacktoken" not in caplog.text and "hooks.slack.com" not in caplog.text


async def test_deliver_sends_what_request_builds():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    built, http = clients(handler)
    async with http:
        for name in ("slack", "pd"):
            assert (await built[name].deliver(transition())).ok
    url, headers, raw = built["pd"].request(transition())
    assert str(seen[1].url) == url and seen[1].content == raw
    assert seen[1].headers["content-type"] == headers["Content-Type"]
    assert str(seen[0].url) == SLACK_URL

"""Receiver clients: one HTTP request per notified transition, for each kind of receiver.

Each client splits into `request` (pure: the URL, headers and body for a transition) and `deliver`
(sends it and says whether a retry can help). Secrets come from the environment variables the
config names; they appear in requests only, never in outcomes, errors or logs: a receiver is
referred to by its name, and response text quoted in an error has every secret redacted.

The kinds:
- webhook: the transition as JSON, HMAC-SHA256 signed over "<timestamp>." + body, so a receiver
  can reject forgeries and replays (`verify_signature`);
- slack: an incoming-webhook message (fallback `text` plus Block Kit `blocks`);
- pagerduty: Events API v2, trigger on firing and resolve on resolved, `dedup_key` = fingerprint;
- alertmanager: v2 `POST /api/v2/alerts`; Alertmanager expires an alert once `endsAt` passes, so
  the service re-sends firing alerts (`AlertmanagerClient.resend`) well within that.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, assert_never

import httpx
import orjson

from gapwatch.core.alerts.lifecycle import AlertState, Transition
from gapwatch.core.alerts.rules import (
    AlertmanagerReceiver,
    AlertsConfig,
    PagerDutyReceiver,
    Severity,
    SlackReceiver,
    WebhookReceiver,
)
from gapwatch.core.durations import short_duration

__all__ = [
    "AlertmanagerClient",
    "DeliveryOutcome",
    "PagerDutyClient",
    "ReceiverClient",
    "ReceiverConfigError",
    "SlackClient",
    "WebhookClient",
    "build_receivers",
    "sign",
    "standard_secret",
    "standard_signature",
    "verify_signature",
]

log = logging.getLogger(__name__)

Request = tuple[str, dict[str, str], bytes]

RETRIABLE_STATUSES = frozenset({408, 425, 429})
"""4xx answers that a later retry can change; every other 4xx (and 3xx) is final."""

SIGNATURE_TOLERANCE_SECONDS = 300.0
LATEST_BREACHED_SHOWN = 10
PAGERDUTY_SUMMARY_LIMIT = 1024
ALERTMANAGER_EXPIRY_RESENDS = 4  # endsAt = now + 4 resend periods: three missed re-sends survive
_ERROR_TEXT_LIMIT = 200
_REDACTED = "[redacted]"

_PAGERDUTY_SEVERITY = {
    Severity.PAGE: "critical",
    Severity.TICKET: "warning",
    Severity.INFO: "info",
}


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What happened to one delivery, and whether trying again later can help."""

    ok: bool
    retriable: bool  # false for 4xx other than 408/425/429
    status: int | None  # HTTP status, None when no response
    error: str  # "" when ok; short, never contains secrets


class ReceiverConfigError(Exception):
    """A receiver cannot be built: names the receiver and the variable, never a value."""

    def __init__(self, receiver: str, variable: str | None, problem: str) -> None:
        self.receiver = receiver
        self.variable = variable
        where = f"environment variable {variable} " if variable else ""
        super().__init__(f"receiver {receiver!r}: {where}{problem}")


# --- signatures ------------------------------------------------------------------------------


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The `X-Gapwatch-Signature` value: `sha256=` + hex HMAC-SHA256 of "<timestamp>." + body."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


STANDARD_SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)


def standard_key(secret: bytes) -> bytes:
    """The Standard Webhooks signing key of a configured secret: a `whsec_<base64>` secret is
    that key, base64-decoded, as every Standard Webhooks library reads it; any other secret is
    used as it is (its bytes), so existing receivers keep their secret. A receiver verifying with
    a library then passes `whsec_` + base64(secret) (`standard_secret`)."""
    text = secret.decode("utf-8", errors="replace")
    if text.startswith(STANDARD_SECRET_PREFIX):
        try:
            return base64.b64decode(text[len(STANDARD_SECRET_PREFIX) :] + "==", validate=False)
        except binascii.Error:
            return secret
    return secret


def standard_secret(secret: bytes) -> str:
    """The secret in the `whsec_` form Standard Webhooks libraries take, for a receiver."""
    return STANDARD_SECRET_PREFIX + base64.b64encode(standard_key(secret)).decode("ascii")


def standard_signature(key: bytes, message_id: str, timestamp: str, body: bytes) -> str:
    """The `webhook-signature` value of the Standard Webhooks specification: `v1,` + base64
    HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>." + body."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    header: str,
    *,
    now: float,
    tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """True if `header` signs exactly these bytes with `secret` and the timestamp is recent."""
    if not timestamp.isascii() or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False  # a replay of an old (or a far-future) delivery
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), header.strip().encode())


# --- clients ---------------------------------------------------------------------------------


class ReceiverClient(ABC):
    """One configured receiver: builds the request for a transition and sends it."""

    kind: ClassVar[str]

    def __init__(
        self,
        name: str,
        http: httpx.AsyncClient,
        *,
        timeout: float,
        secrets: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self._http = http
        self._secrets = _secret_forms(secrets)
        self._clock = clock

    @abstractmethod
    def request(self, t: Transition) -> Request:
        """URL, headers and body notifying `t`; ValueError unless it goes to firing or resolved."""

    def _build(self, t: Transition) -> Request:
        """The request as sent now (clients whose request depends on the time override this)."""
        return self.request(t)

    async def deliver(self, t: Transition) -> DeliveryOutcome:
        """Send the notification for `t`; never raises for HTTP or network failures."""
        url, headers, body = self._build(t)
        outcome = await self._post(url, headers, body)
        if not outcome.ok:
            log.warning(
                "receiver %s (%s): transition %s not delivered (%s, %s)",
                self.name,
                self.kind,
                t.id,
                outcome.error,
                "will retry" if outcome.retriable else "final",
            )
        return outcome

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> DeliveryOutcome:
        try:
            response = await self._http.post(
                url, content=body, headers=headers, timeout=httpx.Timeout(self.timeout)
            )
        except httpx.TimeoutException:
            return DeliveryOutcome(False, True, None, f"timeout after {self.timeout}s")
        except httpx.ConnectError:
            return DeliveryOutcome(False, True, None, "connect error")
        except httpx.UnsupportedProtocol:
            return DeliveryOutcome(False, False, None, "unsupported URL scheme")
        except httpx.TransportError as exc:
            # The class says what went wrong; the message may quote the URL, so it stays out.
            return DeliveryOutcome(False, True, None, f"transport error ({type(exc).__name__})")
        status = response.status_code
        if 200 <= status < 300:
            return DeliveryOutcome(True, False, status, "")
        retriable = status >= 500 or status in RETRIABLE_STATUSES
        return DeliveryOutcome(False, retriable, status, self._http_error(response))

    def _http_error(self, response: httpx.Response) -> str:
        text = " ".join(response.text.split())
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        if len(text) > _ERROR_TEXT_LIMIT:
            text = text[: _ERROR_TEXT_LIMIT - 1] + "…"
        return f"HTTP {response.status_code}: {text}" if text else f"HTTP {response.status_code}"


class WebhookClient(ReceiverClient):
    """POSTs `{"version": "1", "transition": ...}`, signed with the receiver's HMAC key."""

    kind = "webhook"

    def __init__(
        self,
        name: str,
        http: httpx.AsyncClient,
        *,
        url: str,
        secret: bytes,
        timeout: float,
        url_is_secret: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        secrets = [secret.decode(errors="replace")] + ([url] if url_is_secret else [])
        super().__init__(name, http, timeout=timeout, secrets=secrets, clock=clock)
        self._url = url
        self._secret = secret
        self._standard_key = standard_key(secret)

    def request(self, t: Transition, *, timestamp: int | None = None) -> Request:
        """The signed request; `timestamp` (unix seconds) defaults to now."""
        _check_notified(t)
        stamp = str(int(self._clock()) if timestamp is None else timestamp)
        body = orjson.dumps({"version": "1", "transition": t.as_dict()})
        headers = {
            "Content-Type": "application/json",
            "X-Gapwatch-Delivery": t.id,
            "Idempotency-Key": t.id,
            "X-Gapwatch-Timestamp": stamp,
            "X-Gapwatch-Signature": sign(self._secret, stamp, body),
            # Standard Webhooks (standardwebhooks.com): any of its libraries verifies these.
            "webhook-id": t.id,
            "webhook-timestamp": stamp,
            "webhook-signature": standard_signature(self._standard_key, t.id, stamp, body),
        }
        return self._url, headers, body


class SlackClient(ReceiverClient):
    """A Slack incoming webhook: a one-line fallback `text` and Block Kit `blocks`."""

    kind = "slack"

    def __init__(self, name: str, http: httpx.AsyncClient, *, url: str, timeout: float) -> None:
        # The whole URL is the credential (its path carries the token).
        super().__init__(name, http, timeout=timeout, secrets=[url])
        self._url = url

    def request(self, t: Transition) -> Request:
        _check_notified(t)
        body = orjson.dumps({"text": f"{_tag(t)} {_headline(t)}", "blocks": _slack_blocks(t)})
        return self._url, {"Content-Type": "application/json"}, body


class PagerDutyClient(ReceiverClient):
    """PagerDuty Events API v2: trigger on firing, resolve on resolved; dedup by fingerprint."""

    kind = "pagerduty"

    def __init__(
        self,
        name: str,
        http: httpx.AsyncClient,
        *,
        url: str,
        routing_key: str,
        timeout: float,
        alerter_url: str,
    ) -> None:
        super().__init__(name, http, timeout=timeout, secrets=[routing_key])
        self._url = url
        self._routing_key = routing_key
        self._alerter_url = alerter_url.rstrip("/")

    def request(self, t: Transition) -> Request:
        _check_notified(t)
        payload: dict[str, Any] = {
            "summary": _truncate(f"{_tag(t)} {_headline(t)}", PAGERDUTY_SUMMARY_LIMIT),
            "source": "gapwatch",
            "severity": _PAGERDUTY_SEVERITY[t.severity],
            "timestamp": _iso(t.at),
            "component": t.rule,
            "class": t.rule,
            "custom_details": {
                "labels": dict(t.labels),
                "figures": t.figures,
                "window": t.window,
                "latest_breached": list(t.latest_breached),
                **({} if t.items is None else {"items": t.items}),
                "transition_id": t.id,
                "fingerprint": t.fingerprint,
                "firing_since": None if t.firing_since is None else _iso(t.firing_since),
            },
        }
        team = t.labels.get("team", "")
        if team:  # an empty group would only add noise to PagerDuty's grouping
            payload["group"] = team
        event: dict[str, Any] = {
            "routing_key": self._routing_key,
            "event_action": "trigger" if t.to_state is AlertState.FIRING else "resolve",
            "dedup_key": t.fingerprint,
            "payload": payload,
            "client": "gapwatch",
            "client_url": f"{self._alerter_url}/v1/alerts/{t.fingerprint}",
        }
        links = [
            {"href": href, "text": text}
            for href, text in ((t.dashboard_url, "Dashboard"), (t.runbook_url, "Runbook"))
            if href
        ]
        if links:
            event["links"] = links
        return self._url, {"Content-Type": "application/json"}, orjson.dumps(event)


class AlertmanagerClient(ReceiverClient):
    """Prometheus Alertmanager's v2 API: firing alerts expire at endsAt unless re-sent."""

    kind = "alertmanager"

    def __init__(
        self,
        name: str,
        http: httpx.AsyncClient,
        *,
        url: str,
        resend_seconds: float,
        timeout: float,
        alerter_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name, http, timeout=timeout, clock=clock)
        self._url = url.rstrip("/") + "/api/v2/alerts"
        self.resend_seconds = resend_seconds
        self._alerter_url = alerter_url.rstrip("/")

    def request(self, t: Transition, *, now: datetime | None = None) -> Request:
        """POST of `t` as one alert (plus, on an escalation, the resolves of its old severities).

        A firing alert ends 4 resend periods after max(t.at, now): a late (retried) delivery still
        lands as firing. A resolved one ends at t.at, in the past, so Alertmanager resolves it.
        """
        _check_notified(t)
        alerts = [self._alert(t, now)]
        if t.from_state is AlertState.FIRING and t.to_state is AlertState.FIRING:
            # Severity is a label, so an escalated alert is a new Alertmanager alert: end the
            # lower-severity one now instead of letting it linger until it expires.
            alerts += [
                self._alert(t, now, severity=lower, resolved=True)
                for lower in Severity
                if lower.rank < t.severity.rank
            ]
        return self._url, {"Content-Type": "application/json"}, orjson.dumps(alerts)

    def resend_request(self, firing: Sequence[Transition], *, now: datetime) -> Request:
        """One POST re-sending every firing alert, each ending 4 resend periods after `now`."""
        for t in firing:
            if t.to_state is not AlertState.FIRING:
                raise ValueError(f"transition {t.id} is {t.to_state.value}: only firing re-sends")
        alerts = [self._alert(t, now) for t in firing]
        return self._url, {"Content-Type": "application/json"}, orjson.dumps(alerts)

    def _build(self, t: Transition) -> Request:
        return self.request(t, now=self._now())

    async def resend(self, firing: Sequence[Transition]) -> DeliveryOutcome:
        """Re-send all currently firing alerts in one request, so none of them expires."""
        if not firing:
            return DeliveryOutcome(True, False, None, "")
        url, headers, body = self.resend_request(firing, now=self._now())
        outcome = await self._post(url, headers, body)
        if not outcome.ok:
            log.warning(
                "receiver %s (alertmanager): re-send of %d firing alerts failed (%s)",
                self.name,
                len(firing),
                outcome.error,
            )
        return outcome

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _alert(
        self,
        t: Transition,
        now: datetime | None,
        *,
        severity: Severity | None = None,
        resolved: bool | None = None,
    ) -> dict[str, Any]:
        if resolved is None:
            resolved = t.to_state is AlertState.RESOLVED
        start = t.firing_since or t.at
        if now is not None:
            # Alertmanager lives on the wall clock; transitions carry the alerter's evaluation
            # time, which runs ahead of it in replays and accelerated runs. Never tell it an
            # alert starts, or a resolved one ends, in its future.
            start = min(start, now)
        if resolved:
            end = max(start, t.at if now is None else min(t.at, now))
        else:
            base = t.at if now is None else max(t.at, now)
            end = base + timedelta(seconds=ALERTMANAGER_EXPIRY_RESENDS * self.resend_seconds)
        # Group labels first: the identifying labels win over a segment label of the same name.
        labels = {k: v for k, v in t.labels.items() if v}
        labels |= {
            "alertname": t.rule,
            "severity": (severity or t.severity).value,
            "gapwatch_fingerprint": t.fingerprint,
        }
        annotations = {
            "summary": _headline(t),
            "runbook_url": t.runbook_url,
            "dashboard_url": t.dashboard_url,
            "figures": orjson.dumps(t.figures).decode() if t.figures else "",
            "window": t.window,
            "latest_breached": ",".join(t.latest_breached),
            **_items_annotations(t),
        }
        return {
            "labels": labels,
            "annotations": {k: v for k, v in annotations.items() if v},
            "startsAt": _iso(start),
            "endsAt": _iso(end),
            "generatorURL": f"{self._alerter_url}/v1/alerts/{t.fingerprint}",
        }


# --- building from the config ----------------------------------------------------------------


def build_receivers(
    config: AlertsConfig,
    env: Mapping[str, str],
    http: httpx.AsyncClient,
    *,
    alerter_url: str,
) -> dict[str, ReceiverClient]:
    """A client per configured receiver, by name; ReceiverConfigError if a secret is missing."""

    def secret(receiver: str, variable: str) -> str:
        value = env.get(variable, "")
        if not value.strip():
            raise ReceiverConfigError(receiver, variable, "is not set (or empty)")
        return value.strip()

    clients: dict[str, ReceiverClient] = {}
    for cfg in config.receivers:
        client: ReceiverClient
        match cfg:
            case WebhookReceiver():
                if cfg.url_env:
                    url = secret(cfg.name, cfg.url_env)
                    _check_url(url, cfg.name, cfg.url_env)
                elif cfg.url:
                    url = cfg.url
                    _check_url(url, cfg.name, None)
                else:
                    raise ReceiverConfigError(cfg.name, None, "needs url or url_env")
                client = WebhookClient(
                    cfg.name,
                    http,
                    url=url,
                    secret=secret(cfg.name, cfg.secret_env).encode(),
                    timeout=cfg.timeout_seconds,
                    url_is_secret=cfg.url_env is not None,
                )
            case SlackReceiver():
                url = secret(cfg.name, cfg.url_env)
                _check_url(url, cfg.name, cfg.url_env)
                client = SlackClient(cfg.name, http, url=url, timeout=cfg.timeout_seconds)
            case PagerDutyReceiver():
                _check_url(cfg.url, cfg.name, None)
                client = PagerDutyClient(
                    cfg.name,
                    http,
                    url=cfg.url,
                    routing_key=secret(cfg.name, cfg.routing_key_env),
                    timeout=cfg.timeout_seconds,
                    alerter_url=alerter_url,
                )
            case AlertmanagerReceiver():
                _check_url(cfg.url, cfg.name, None)
                client = AlertmanagerClient(
                    cfg.name,
                    http,
                    url=cfg.url,
                    resend_seconds=cfg.resend_seconds,
                    timeout=cfg.timeout_seconds,
                    alerter_url=alerter_url,
                )
            case _:
                assert_never(cfg)
        clients[cfg.name] = client
    return clients


def _check_url(url: str, receiver: str, variable: str | None) -> None:
    """An absolute http(s) URL; the message never quotes a URL read from the environment."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        shown = "" if variable else f" {url!r}"
        raise ReceiverConfigError(receiver, variable, f"does not hold an http(s) URL{shown}")


# --- formatting ------------------------------------------------------------------------------


def _check_notified(t: Transition) -> None:
    if not t.notifies:
        raise ValueError(
            f"transition {t.id} goes to {t.to_state.value}: only firing and resolved are notified"
        )


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _tag(t: Transition) -> str:
    if t.to_state is AlertState.FIRING:
        return f"[FIRING {t.severity.value}]"
    return "[RESOLVED]"


def _headline(t: Transition) -> str:
    if t.summary:
        return t.summary
    labels = ", ".join(f"{k}={v}" for k, v in sorted(t.labels.items()))
    return f"{t.rule} ({labels})" if labels else t.rule


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _secret_forms(secrets: Sequence[str]) -> tuple[str, ...]:
    """Each secret plus, for URLs, the path (an error page may quote only the path)."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        forms.add(secret)
        if "://" in secret:
            try:
                path = httpx.URL(secret).raw_path.decode("ascii", "replace")
            except httpx.InvalidURL:
                continue
            if len(path) > 1:
                forms.add(path)
    # Longest first, so a URL is redacted whole before its path is looked for.
    return tuple(sorted(forms, key=len, reverse=True))


def _mrkdwn(text: str) -> str:
    """Slack treats &, < and > as markup (`<!channel>` pings everyone): escape them."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str, text: str) -> str:
    return f"<{_mrkdwn(url).replace('|', '%7C')}|{text}>"


def _slack_blocks(t: Transition) -> list[dict[str, Any]]:
    """Header, summary, facts, figures, latest breached ids, links; within Block Kit's limits."""

    def section(text: str) -> dict[str, Any]:
        return {"type": "section", "text": {"type": "mrkdwn", "text": _truncate(text, 3000)}}

    firing = t.to_state is AlertState.FIRING
    labels = ", ".join(f"`{_mrkdwn(k)}={_mrkdwn(v)}`" for k, v in sorted(t.labels.items()))
    facts = [f"*Severity*\n{t.severity.value}", f"*Labels*\n{labels or '(none)'}"]
    if t.window:
        facts.append(f"*Window*\n{_mrkdwn(t.window)}")
    if t.firing_since is not None:
        facts.append(f"*Firing since*\n{_iso(t.firing_since)}")
    if not firing:
        facts.append(f"*Resolved at*\n{_iso(t.at)}")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _truncate(f"{_tag(t)} {t.rule}", 150)},
        },
        section(_mrkdwn(_headline(t))),
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": _truncate(f, 2000)} for f in facts],
        },
    ]
    if t.figures:
        figures = orjson.dumps(t.figures, option=orjson.OPT_INDENT_2).decode()
        blocks.append(section(f"*Figures*\n```{_truncate(_mrkdwn(figures), 2900)}```"))
    if t.items is not None and (t.items["overdue"] or t.items["at_risk"]):
        blocks.append(section(_mrkdwn(_items_line(t.items))))
    if t.latest_breached:
        shown = t.latest_breached[:LATEST_BREACHED_SHOWN]  # newest first, as the windows keep them
        more = len(t.latest_breached) - len(shown)
        ids = ", ".join(f"`{_mrkdwn(i)}`" for i in shown) + (f" and {more} more" if more else "")
        blocks.append(section(f"*Latest breached*\n{ids}"))
    links = [
        _link(url, text)
        for url, text in ((t.runbook_url, "Runbook"), (t.dashboard_url, "Dashboard"))
        if url
    ]
    if links:
        blocks.append(section(" · ".join(links)))
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"gapwatch · transition `{t.id}` · fingerprint `{t.fingerprint}`",
                }
            ],
        }
    )
    return blocks


def _items_line(items: Mapping[str, Any]) -> str:
    """ "3 overdue, 2 at risk: T-1 (1h05m overdue), T-2 (40m overdue), ..." for a page."""
    shown = []
    for item in items["top"]:
        over = item.get("overdue_by_seconds")
        left = item.get("time_left_seconds")
        how = (
            f"{short_duration(over)} overdue"
            if over is not None
            else f"{short_duration(left or 0)} left"
        )
        shown.append(f"{item['item_id']} {item['promise_kind']} ({how})")
    head = f"{items['overdue']} overdue, {items['at_risk']} at risk"
    return head + (": " + ", ".join(shown) if shown else "")


def _items_annotations(t: Transition) -> dict[str, str]:
    """Alertmanager annotations naming the promises behind a page (strings, as it wants)."""
    if t.items is None:
        return {}
    return {
        "promises_overdue": str(t.items["overdue"]),
        "promises_at_risk": str(t.items["at_risk"]),
        "items": _truncate(_items_line(t.items), 2000),
    }

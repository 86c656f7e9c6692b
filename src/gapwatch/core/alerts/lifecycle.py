"""An alert's life: inactive → pending → firing → resolved, one stable identity per rule and group.

Pure: `advance` takes the alert as it was, the verdict of one evaluation and the time, and returns
the alert as it is now plus the transitions that happened. Transition ids are derived from the
fingerprint and the alert's transition count, so evaluating the same thing twice (say after a
crash before the result was stored) produces the same ids, and receivers that dedup see one.

The rules:
- condition true: inactive/resolved → pending (→ firing at once when `for` is 0); pending →
  firing once it has held `for`; firing stays firing (a higher severity re-notifies);
- condition false: pending → inactive (never notified); firing → resolved once it has been clear
  for `hold` (a flap inside the hold pages nobody again);
- no data: per the rule's `no_data` — keep (nothing moves), ok (as false) or fire (as true).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from gapwatch.core.alerts.rules import NoData, Rule, Severity

__all__ = ["Alert", "AlertState", "Transition", "Verdict", "advance", "fingerprint"]

_TRANSITIONS = uuid.UUID("6f0d8c52-4c1b-4c7e-9f63-1a3f0a7d2b90")


class AlertState(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


NOTIFIED_STATES = frozenset({AlertState.FIRING, AlertState.RESOLVED})
"""Receivers hear about these; pending and inactive are kept in history only."""


def fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """The alert's identity: stable across processes, restarts and versions of this code."""
    canonical = orjson.dumps({"rule": rule, "labels": dict(sorted(labels.items()))})
    return hashlib.sha256(canonical).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One evaluation of one group: is the condition true, and the evidence either way.

    `firing` is None when there was no data to judge. `figures` are the numbers that were
    compared (JSON-friendly), `window` the window they cover.
    """

    firing: bool | None
    severity: Severity
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)
    window: str = ""
    latest_breached: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Alert:
    """The stored state of one alert (one rule and group)."""

    fingerprint: str
    rule: str
    labels: dict[str, str]
    state: AlertState = AlertState.INACTIVE
    severity: Severity = Severity.INFO
    sequence: int = 0  # transitions so far; the next one's id derives from it
    pending_since: datetime | None = None
    firing_since: datetime | None = None
    clear_since: datetime | None = None
    resolved_at: datetime | None = None
    evaluated_at: datetime | None = None
    summary: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    window: str = ""
    latest_breached: tuple[str, ...] = ()

    @classmethod
    def new(cls, rule: str, labels: Mapping[str, str]) -> Alert:
        return cls(fingerprint(rule, labels), rule, dict(labels))


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of state, as stored, published on `gapwatch.alerts.v1` and notified."""

    id: str
    fingerprint: str
    rule: str
    labels: dict[str, str]
    severity: Severity
    from_state: AlertState
    to_state: AlertState
    at: datetime
    sequence: int
    summary: str
    figures: dict[str, Any]
    window: str
    latest_breached: tuple[str, ...]
    firing_since: datetime | None
    runbook_url: str = ""
    dashboard_url: str = ""
    # The promises behind a page: overdue and at-risk counts of the alert's group and its most
    # overdue items (`{"overdue": n, "at_risk": n, "top": [...]}`), from the promises view.
    items: dict[str, Any] | None = None

    @property
    def notifies(self) -> bool:
        return self.to_state in NOTIFIED_STATES

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "rule": self.rule,
            "labels": dict(self.labels),
            "severity": self.severity.value,
            "from_state": self.from_state.value,
            "to_state": self.to_state.value,
            "at": _iso(self.at),
            "sequence": self.sequence,
            "summary": self.summary,
            "figures": self.figures,
            "window": self.window,
            "latest_breached": list(self.latest_breached),
            "firing_since": None if self.firing_since is None else _iso(self.firing_since),
            "runbook_url": self.runbook_url,
            "dashboard_url": self.dashboard_url,
            **({} if self.items is None else {"items": self.items}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transition:
        return cls(
            id=data["id"],
            fingerprint=data["fingerprint"],
            rule=data["rule"],
            labels=dict(data["labels"]),
            severity=Severity(data["severity"]),
            from_state=AlertState(data["from_state"]),
            to_state=AlertState(data["to_state"]),
            at=datetime.fromisoformat(data["at"]),
            sequence=data["sequence"],
            summary=data["summary"],
            figures=dict(data["figures"]),
            window=data["window"],
            latest_breached=tuple(data["latest_breached"]),
            firing_since=(
                None
                if data["firing_since"] is None
                else datetime.fromisoformat(data["firing_since"])
            ),
            runbook_url=data.get("runbook_url", ""),
            dashboard_url=data.get("dashboard_url", ""),
            items=data.get("items"),
        )


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def transition_id(fp: str, sequence: int) -> str:
    return str(uuid.uuid5(_TRANSITIONS, f"{fp}/{sequence}"))


def advance(
    alert: Alert, verdict: Verdict, now: datetime, rule: Rule
) -> tuple[Alert, list[Transition]]:
    """The alert after one evaluation at `now`, and the transitions it went through (0 to 2)."""
    condition = verdict.firing
    if condition is None:
        if rule.no_data is NoData.KEEP:
            return replace(alert, evaluated_at=now), []
        condition = rule.no_data is NoData.FIRE
    current = replace(alert, evaluated_at=now)
    if condition:
        current = replace(
            current,
            summary=verdict.summary,
            figures=verdict.figures,
            window=verdict.window,
            latest_breached=verdict.latest_breached or alert.latest_breached,
            clear_since=None,
        )
    transitions: list[Transition] = []

    def move(to: AlertState, **changes: Any) -> None:
        nonlocal current
        before = current.state
        current = replace(current, state=to, sequence=current.sequence + 1, **changes)
        transitions.append(_transition(current, before, now, rule))

    state = current.state
    if condition:
        if state in (AlertState.INACTIVE, AlertState.RESOLVED):
            move(
                AlertState.PENDING,
                pending_since=now,
                severity=verdict.severity,
                resolved_at=None,
                firing_since=None,
            )
            state = AlertState.PENDING
        if state is AlertState.PENDING:
            current = replace(current, severity=_max(current.severity, verdict.severity))
            assert current.pending_since is not None
            if now - current.pending_since >= timedelta(seconds=rule.for_):
                move(AlertState.FIRING, firing_since=now)
        elif state is AlertState.FIRING and verdict.severity.rank > current.severity.rank:
            move(AlertState.FIRING, severity=verdict.severity)  # escalation: tell them again
    else:
        if state is AlertState.PENDING:
            move(AlertState.INACTIVE, pending_since=None)
        elif state is AlertState.FIRING:
            clear_since = current.clear_since or now
            current = replace(
                current, clear_since=clear_since, figures=verdict.figures or current.figures
            )
            if now - clear_since >= timedelta(seconds=rule.hold):
                move(
                    AlertState.RESOLVED,
                    resolved_at=now,
                    pending_since=None,
                    clear_since=None,
                    summary=verdict.summary or current.summary,
                )
    return current, transitions


def _max(a: Severity, b: Severity) -> Severity:
    return a if a.rank >= b.rank else b


def _transition(alert: Alert, before: AlertState, now: datetime, rule: Rule) -> Transition:
    runbook, dashboard = rule.links(alert.labels)
    return Transition(
        id=transition_id(alert.fingerprint, alert.sequence),
        fingerprint=alert.fingerprint,
        rule=alert.rule,
        labels=dict(alert.labels),
        severity=alert.severity,
        from_state=before,
        to_state=alert.state,
        at=now,
        sequence=alert.sequence,
        summary=alert.summary,
        figures=dict(alert.figures),
        window=alert.window,
        latest_breached=alert.latest_breached,
        firing_since=alert.firing_since,
        runbook_url=runbook,
        dashboard_url=dashboard,
    )

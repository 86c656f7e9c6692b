"""Alert rules, receivers and routes: the validated shape of `deploy/config/alerts.yaml`.

Pure config. Durations are written like the SLA policies' ("30s", "5m", "1h"); windows name the
scorer's rolling windows (`gapwatch.core.windows.WINDOWS`), because the alerter reads its figures
from the scorer's snapshots rather than keeping a second copy of every gap.

Secrets never appear in the file: a receiver names the environment variable that holds its URL,
HMAC secret or routing key, and the alerter reads it at start.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from gapwatch.core.alerts.links import filled, joined
from gapwatch.core.promises import PromiseKind
from gapwatch.core.windows import WINDOWS

__all__ = [
    "AlertmanagerReceiver",
    "AlertsConfig",
    "BurnRateCondition",
    "BurnRateWindow",
    "CsatCondition",
    "DivergenceCondition",
    "NoData",
    "OverdueCondition",
    "PagerDutyReceiver",
    "Receiver",
    "Route",
    "Rule",
    "Severity",
    "SlackReceiver",
    "WebhookReceiver",
]

WINDOW_NAMES: tuple[str, ...] = tuple(w.name for w in WINDOWS)
WINDOW_SECONDS: dict[str, int] = {w.name: w.seconds for w in WINDOWS}

_DURATION = re.compile(r"^\s*(?P<amount>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NAME = r"^[a-z][a-z0-9_-]{0,63}$"
_LABEL = r"^[a-z][a-z0-9_]{0,63}$"
_ENV = r"^[A-Z][A-Z0-9_]{0,127}$"


def _seconds(value: Any) -> Any:
    """'30s', '5m', '1h', '2d' (wall-clock days here) or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match["amount"]) * _UNIT_SECONDS[match["unit"]]
    raise PydanticCustomError(
        "duration_format", "expected a duration like '30s', '5m' or '1h', or a number of seconds"
    )


Seconds = Annotated[float, BeforeValidator(_seconds), Field(ge=0)]


def _window(value: Any) -> Any:
    if value not in WINDOW_NAMES:
        raise PydanticCustomError(
            "window_name",
            "unknown window {value}: the scorer publishes {names}",
            {"value": repr(value), "names": ", ".join(WINDOW_NAMES)},
        )
    return value


WindowName = Annotated[str, BeforeValidator(_window)]


class Severity(StrEnum):
    """How loud: a page wakes someone, a ticket waits for working hours."""

    PAGE = "page"
    TICKET = "ticket"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.TICKET: 1, Severity.PAGE: 2}


class NoData(StrEnum):
    """What a group with no fresh figures (or no events in the window) does."""

    OK = "ok"  # counts as healthy: a firing alert resolves after its hold
    KEEP = "keep"  # nothing changes until figures return
    FIRE = "fire"  # silence is itself the problem (e.g. the scorer stopped publishing)


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BurnRateWindow(_Config):
    """One pair of the multi-window rule: both windows must burn at `factor` or faster."""

    long: WindowName
    short: WindowName
    factor: float = Field(gt=0)
    severity: Severity

    @model_validator(mode="after")
    def _short_is_shorter(self) -> Self:
        if WINDOW_SECONDS[self.short] >= WINDOW_SECONDS[self.long]:
            raise PydanticCustomError("window_order", "the short window must be shorter than long")
        return self


DEFAULT_BURN_WINDOWS: tuple[BurnRateWindow, ...] = (
    BurnRateWindow(long="1h", short="5m", factor=14.4, severity=Severity.PAGE),
    BurnRateWindow(long="6h", short="30m", factor=6.0, severity=Severity.TICKET),
)
"""The SRE workbook's defaults: 2 % of a 30-day budget in 1 h pages; 5 % in 6 h files a ticket."""


class BurnRateCondition(_Config):
    """SLO burn rate on attainment: (1 - attainment) / (1 - objective) over two windows."""

    type: Literal["burn_rate"]
    objective: float = Field(gt=0, lt=1)
    windows: tuple[BurnRateWindow, ...] = Field(default=DEFAULT_BURN_WINDOWS, min_length=1)
    min_events: int = Field(
        default=10, ge=1, description="Fewest met + breached in the long window to judge at all."
    )

    @model_validator(mode="after")
    def _reachable(self) -> Self:
        ceiling = 1.0 / (1.0 - self.objective)  # every promise breached
        for i, pair in enumerate(self.windows):
            if pair.factor > ceiling + 1e-9:
                raise PydanticCustomError(
                    "factor_unreachable",
                    "windows[{i}]: factor {factor} can never fire at objective {objective}: "
                    "the highest possible burn rate is {ceiling}",
                    {
                        "i": i,
                        "factor": pair.factor,
                        "objective": self.objective,
                        "ceiling": round(ceiling, 3),
                    },
                )
        return self


class DivergenceCondition(_Config):
    """Delivered response times pulling away from what was promised."""

    type: Literal["divergence"]
    window: WindowName
    max_ratio: float | None = Field(default=None, gt=0, description="delivered p90 / promised p90")
    max_gap_p90: Seconds | None = Field(default=None, description="gap p90, seconds late")
    min_events: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _one_threshold(self) -> Self:
        if self.max_ratio is None and self.max_gap_p90 is None:
            raise PydanticCustomError("threshold_missing", "set max_ratio, max_gap_p90 or both")
        return self


class OverdueCondition(_Config):
    """Promises already past due and still open: breaches happening now."""

    type: Literal["overdue"]
    above: int = Field(ge=0, description="Fires when more than this many are overdue.")


class CsatCondition(_Config):
    """Customer satisfaction below a floor, once enough customers answered."""

    type: Literal["csat"]
    window: WindowName
    floor: float = Field(gt=0, le=5)
    min_responses: int = Field(default=5, ge=1)


Condition = Annotated[
    BurnRateCondition | DivergenceCondition | OverdueCondition | CsatCondition,
    Field(discriminator="type"),
]


class Rule(_Config):
    """What to watch, how to group it, and when a group fires."""

    name: str = Field(pattern=_NAME)
    summary: str = Field(default="", max_length=300, description="One line for the notification.")
    promise_kinds: tuple[PromiseKind, ...] = Field(
        default=(), description="Promise kinds this rule reads; empty means all of them."
    )
    match: dict[str, str] = Field(
        default_factory=dict, description="Segment labels that must equal these values."
    )
    group_by: tuple[str, ...] = Field(
        default=(), description="Segment labels that make one alert per distinct value set."
    )
    condition: Condition
    severity: Severity = Field(
        default=Severity.PAGE, description="Severity of conditions that do not set their own."
    )
    for_: Seconds = Field(default=0.0, alias="for", description="Held this long before firing.")
    hold: Seconds = Field(default=300.0, description="Clear this long before resolving.")
    no_data: NoData = NoData.KEEP
    runbook_url: str = Field(
        default="",
        max_length=2000,
        description="A URL, or a path joined to GAPWATCH_RUNBOOK_BASE_URL; `{label}` takes the "
        "alert's label value.",
    )
    dashboard_url: str = Field(
        default="",
        max_length=2000,
        description="A URL, or a path (`d/gapwatch-overview`) joined to GAPWATCH_GRAFANA_URL; "
        "the alert's labels are added as Grafana variables (`var-team=billing`).",
    )

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def links(self, labels: Mapping[str, str]) -> tuple[str, str]:
        """(runbook, dashboard) of an alert of this rule with these labels (`links.filled`)."""
        return (
            filled(self.runbook_url, labels, dashboard=False),
            filled(self.dashboard_url, labels, dashboard=True),
        )

    @model_validator(mode="after")
    def _labels_are_names(self) -> Self:
        for label in (*self.match, *self.group_by):
            if not re.match(_LABEL, label):
                raise PydanticCustomError(
                    "label_name", "bad label name {label}", {"label": repr(label)}
                )
        if len(set(self.group_by)) != len(self.group_by):
            raise PydanticCustomError("group_by_repeat", "a label appears twice in group_by")
        return self


class _Receiver(_Config):
    name: str = Field(pattern=_NAME)
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)


class WebhookReceiver(_Receiver):
    """POSTs the notification JSON, signed: `X-Gapwatch-Signature: sha256=<hex HMAC of body>`."""

    type: Literal["webhook"]
    url: str = Field(default="", description="Target URL (or url_env).")
    url_env: str | None = Field(default=None, pattern=_ENV)
    secret_env: str = Field(pattern=_ENV, description="Environment variable with the HMAC key.")


class SlackReceiver(_Receiver):
    """A Slack incoming webhook; its URL is a secret, so only its variable is named here."""

    type: Literal["slack"]
    url_env: str = Field(pattern=_ENV)


class PagerDutyReceiver(_Receiver):
    """PagerDuty Events API v2: trigger and resolve with dedup_key = the alert fingerprint."""

    type: Literal["pagerduty"]
    routing_key_env: str = Field(pattern=_ENV)
    url: str = "https://events.pagerduty.com/v2/enqueue"


class AlertmanagerReceiver(_Receiver):
    """Prometheus Alertmanager's v2 API, so teams keep their routing, silences and inhibition."""

    type: Literal["alertmanager"]
    url: str = Field(description="Base URL, e.g. http://127.0.0.1:9093")
    resend_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="How often firing alerts are re-sent."
    )


Receiver = Annotated[
    WebhookReceiver | SlackReceiver | PagerDutyReceiver | AlertmanagerReceiver,
    Field(discriminator="type"),
]


class Route(_Config):
    """Which receivers hear an alert; the first matching route wins unless it says `continue`."""

    receivers: tuple[str, ...] = Field(min_length=1)
    rules: tuple[str, ...] = Field(default=(), description="Rule names; empty matches any.")
    severities: tuple[Severity, ...] = Field(default=(), description="Empty matches any.")
    match: dict[str, str] = Field(default_factory=dict, description="Alert labels to equal.")
    continue_: bool = Field(default=False, alias="continue")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def matches(self, rule: str, severity: Severity, labels: Mapping[str, str]) -> bool:
        return (
            (not self.rules or rule in self.rules)
            and (not self.severities or severity in self.severities)
            and all(labels.get(k) == v for k, v in self.match.items())
        )


class AlertsConfig(_Config):
    """The whole alerts file."""

    version: str = Field(min_length=1, max_length=64)
    rules: tuple[Rule, ...] = Field(min_length=1)
    receivers: tuple[Receiver, ...] = ()
    routes: tuple[Route, ...] = ()
    default_receivers: tuple[str, ...] = Field(
        default=(), description="Receivers of alerts no route matched."
    )

    def with_link_bases(self, runbooks: str, grafana: str) -> AlertsConfig:
        """The same config, its rules' relative runbook and dashboard links joined to these
        bases (the alerter's GAPWATCH_RUNBOOK_BASE_URL and GAPWATCH_GRAFANA_URL)."""
        rules = tuple(
            rule.model_copy(
                update={
                    "runbook_url": joined(runbooks, rule.runbook_url),
                    "dashboard_url": joined(grafana, rule.dashboard_url),
                }
            )
            for rule in self.rules
        )
        return self.model_copy(update={"rules": rules})

    @model_validator(mode="after")
    def _names_resolve(self) -> Self:
        rule_names = [r.name for r in self.rules]
        if len(set(rule_names)) != len(rule_names):
            raise PydanticCustomError("rule_repeat", "two rules share a name")
        receiver_names = [r.name for r in self.receivers]
        if len(set(receiver_names)) != len(receiver_names):
            raise PydanticCustomError("receiver_repeat", "two receivers share a name")
        known = set(receiver_names)
        for route in self.routes:
            for name in route.receivers:
                if name not in known:
                    raise PydanticCustomError(
                        "receiver_unknown",
                        "route names unknown receiver {name}",
                        {"name": repr(name)},
                    )
            for rule in route.rules:
                if rule not in rule_names:
                    raise PydanticCustomError(
                        "rule_unknown", "route names unknown rule {rule}", {"rule": repr(rule)}
                    )
        for name in self.default_receivers:
            if name not in known:
                raise PydanticCustomError(
                    "receiver_unknown",
                    "default_receivers names unknown {name}",
                    {"name": repr(name)},
                )
        return self

    def check_labels(self, segment_labels: tuple[str, ...]) -> list[str]:
        """Problems with labels the scorer does not put in segments, as 'rules[i].field: why'."""
        problems = []
        for i, rule in enumerate(self.rules):
            for field, labels in (("match", tuple(rule.match)), ("group_by", rule.group_by)):
                for label in labels:
                    if label not in segment_labels:
                        problems.append(
                            f"rules[{i}] ({rule.name}).{field}: label {label!r} is not a segment "
                            f"label (the scorer segments by {', '.join(segment_labels)})"
                        )
        return problems

    def receivers_for(
        self, rule: str, severity: Severity, labels: Mapping[str, str]
    ) -> tuple[str, ...]:
        """Receiver names in route order, each once; `default_receivers` when no route matched."""
        chosen: dict[str, None] = {}
        for route in self.routes:
            if route.matches(rule, severity, labels):
                chosen.update(dict.fromkeys(route.receivers))
                if not route.continue_:
                    break
        return tuple(chosen) if chosen else self.default_receivers

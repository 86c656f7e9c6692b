"""Alert rules config: what validates, where a bad field is reported, routing and label checks."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from gapwatch.config import ConfigFileError, load_alerts
from gapwatch.core.alerts.rules import (
    DEFAULT_BURN_WINDOWS,
    AlertmanagerReceiver,
    AlertsConfig,
    BurnRateCondition,
    CsatCondition,
    DivergenceCondition,
    NoData,
    OverdueCondition,
    PagerDutyReceiver,
    Rule,
    Severity,
    SlackReceiver,
    WebhookReceiver,
)
from gapwatch.core.promises import PromiseKind

# The shape `deploy/config/alerts.yaml` loads into, as yaml.safe_load would return it.
VALID: dict[str, Any] = {
    "version": "2026-03-01",
    "rules": [
        {
            "name": "fr-burn",
            "summary": "First responses burn the error budget",
            "promise_kinds": ["first_response"],
            "group_by": ["team"],
            "condition": {"type": "burn_rate", "objective": 0.95},
            "for": "2m",
            "hold": "10m",
            "runbook_url": "https://runbooks.example/fr-burn",
        },
        {
            "name": "slow-delivery",
            "match": {"region": "eu"},
            "group_by": ["team", "region"],
            "condition": {
                "type": "divergence",
                "window": "1h",
                "max_ratio": 2.0,
                "max_gap_p90": "15m",
            },
            "severity": "ticket",
        },
        {"name": "overdue-now", "condition": {"type": "overdue", "above": 3}, "no_data": "ok"},
        {
            "name": "csat-floor",
            "condition": {"type": "csat", "window": "24h", "floor": 3.5},
            "no_data": "fire",
        },
    ],
    "receivers": [
        {
            "name": "hook",
            "type": "webhook",
            "url": "https://hooks.example/gapwatch",
            "secret_env": "GAPWATCH_HOOK_SECRET",
        },
        {"name": "chat", "type": "slack", "url_env": "GAPWATCH_SLACK_URL"},
        {"name": "oncall", "type": "pagerduty", "routing_key_env": "GAPWATCH_PD_KEY"},
        {"name": "am", "type": "alertmanager", "url": "http://127.0.0.1:9093"},
    ],
    "routes": [
        {"rules": ["fr-burn"], "severities": ["page"], "receivers": ["oncall"], "continue": True},
        {"match": {"team": "payments"}, "receivers": ["hook", "chat"]},
    ],
    "default_receivers": ["chat"],
}

REPO = Path(__file__).resolve().parents[2]


def config(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    data.update(changes)
    return data


def with_rule(index: int, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    data["rules"][index].update(changes)
    return data


def errors(data: dict[str, Any]) -> list[tuple[str, tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        AlertsConfig.model_validate(data)
    return [(e["type"], tuple(e["loc"]), e["msg"]) for e in caught.value.errors()]


def error(data: dict[str, Any], type_: str) -> tuple[tuple[int | str, ...], str]:
    """The loc and message of the one error of `type_` (pydantic may add a too_short beside it)."""
    found = [(loc, msg) for t, loc, msg in errors(data) if t == type_]
    assert len(found) == 1, errors(data)
    return found[0]


# --- a valid file -------------------------------------------------------------------------------


def test_valid_file_loads_with_its_values() -> None:
    cfg = AlertsConfig.model_validate(VALID)

    burn, slow, overdue, csat = cfg.rules
    assert burn.name == "fr-burn"
    assert burn.promise_kinds == (PromiseKind.FIRST_RESPONSE,)
    assert burn.group_by == ("team",)
    assert burn.for_ == 120.0
    assert burn.hold == 600.0
    assert burn.severity is Severity.PAGE
    assert burn.no_data is NoData.KEEP
    assert isinstance(burn.condition, BurnRateCondition)
    assert burn.condition.objective == 0.95
    assert burn.condition.min_events == 10

    assert isinstance(slow.condition, DivergenceCondition)
    assert slow.match == {"region": "eu"}
    assert slow.severity is Severity.TICKET
    assert slow.condition.max_ratio == 2.0
    assert slow.condition.max_gap_p90 == 900.0  # "15m"
    assert slow.condition.min_events == 10
    assert slow.for_ == 0.0
    assert slow.hold == 300.0

    assert isinstance(overdue.condition, OverdueCondition)
    assert overdue.condition.above == 3
    assert overdue.no_data is NoData.OK

    assert isinstance(csat.condition, CsatCondition)
    assert csat.condition.floor == 3.5
    assert csat.condition.min_responses == 5
    assert csat.no_data is NoData.FIRE

    hook, chat, oncall, am = cfg.receivers
    assert isinstance(hook, WebhookReceiver) and hook.secret_env == "GAPWATCH_HOOK_SECRET"
    assert isinstance(chat, SlackReceiver) and chat.url_env == "GAPWATCH_SLACK_URL"
    assert isinstance(oncall, PagerDutyReceiver)
    assert oncall.url == "https://events.pagerduty.com/v2/enqueue"
    assert isinstance(am, AlertmanagerReceiver) and am.resend_seconds == 60.0
    assert hook.timeout_seconds == 5.0
    assert cfg.routes[0].continue_ is True
    assert cfg.routes[1].continue_ is False
    assert cfg.default_receivers == ("chat",)


def test_burn_rate_defaults_to_the_sre_workbook_pairs() -> None:
    cfg = AlertsConfig.model_validate(VALID)
    condition = cfg.rules[0].condition
    assert isinstance(condition, BurnRateCondition)
    assert condition.windows == DEFAULT_BURN_WINDOWS
    assert [(w.long, w.short, w.factor, w.severity) for w in condition.windows] == [
        ("1h", "5m", 14.4, Severity.PAGE),
        ("6h", "30m", 6.0, Severity.TICKET),
    ]


def test_explicit_burn_windows_are_kept_in_order() -> None:
    windows = [
        {"long": "24h", "short": "1h", "factor": 3, "severity": "ticket"},
        {"long": "7d", "short": "6h", "factor": 1, "severity": "info"},
    ]
    data = with_rule(0, condition={"type": "burn_rate", "objective": 0.99, "windows": windows})
    condition = AlertsConfig.model_validate(data).rules[0].condition
    assert isinstance(condition, BurnRateCondition)
    assert [(w.long, w.short, w.factor, w.severity) for w in condition.windows] == [
        ("24h", "1h", 3.0, Severity.TICKET),
        ("7d", "6h", 1.0, Severity.INFO),
    ]


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("5m", 300.0),
        ("30s", 30.0),
        ("1.5h", 5400.0),
        ("2d", 172800.0),
        (" 10 m ", 600.0),
        (90, 90.0),
        (2.5, 2.5),
        ("0s", 0.0),
    ],
)
def test_for_alias_reads_durations(written: object, seconds: float) -> None:
    rule = AlertsConfig.model_validate(with_rule(2, **{"for": written})).rules[2]
    assert rule.for_ == seconds


def test_for_can_also_be_given_by_field_name() -> None:
    rule = Rule.model_validate(
        {"name": "x", "condition": {"type": "overdue", "above": 0}, "for_": "1m"}
    )
    assert rule.for_ == 60.0


def test_config_is_frozen() -> None:
    cfg = AlertsConfig.model_validate(VALID)
    with pytest.raises(ValidationError):
        cfg.rules[0].name = "other"  # type: ignore[misc]


# --- where errors are reported -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "type_", "loc"),
    [
        pytest.param(
            with_rule(0, condition={"type": "burn_rate", "objective": 1.5}),
            "less_than",
            ("rules", 0, "condition", "burn_rate", "objective"),
            id="objective-above-1",
        ),
        pytest.param(
            with_rule(0, condition={"type": "burn_rate", "objective": 0}),
            "greater_than",
            ("rules", 0, "condition", "burn_rate", "objective"),
            id="objective-0",
        ),
        pytest.param(
            with_rule(0, condition={"type": "burn_rate", "objective": 0.95, "min_events": 0}),
            "greater_than_equal",
            ("rules", 0, "condition", "burn_rate", "min_events"),
            id="min-events-0",
        ),
        pytest.param(
            with_rule(
                0,
                condition={
                    "type": "burn_rate",
                    "objective": 0.95,
                    "windows": [{"long": "1h", "short": "5m", "factor": 0, "severity": "page"}],
                },
            ),
            "greater_than",
            ("rules", 0, "condition", "burn_rate", "windows", 0, "factor"),
            id="factor-0",
        ),
        pytest.param(
            with_rule(1, condition={"type": "divergence", "window": "1h", "max_ratio": -1}),
            "greater_than",
            ("rules", 1, "condition", "divergence", "max_ratio"),
            id="negative-ratio",
        ),
        pytest.param(
            with_rule(1, condition={"type": "divergence", "window": "1h"}),
            "threshold_missing",
            ("rules", 1, "condition", "divergence"),
            id="divergence-without-threshold",
        ),
        pytest.param(
            with_rule(2, condition={"type": "overdue", "above": -1}),
            "greater_than_equal",
            ("rules", 2, "condition", "overdue", "above"),
            id="overdue-negative",
        ),
        pytest.param(
            with_rule(3, condition={"type": "csat", "window": "24h", "floor": 6}),
            "less_than_equal",
            ("rules", 3, "condition", "csat", "floor"),
            id="csat-floor-above-5",
        ),
        pytest.param(
            with_rule(2, condition={"type": "latency", "above": 1}),
            "union_tag_invalid",
            ("rules", 2, "condition"),
            id="unknown-condition-type",
        ),
        pytest.param(
            with_rule(2, **{"for": "5 minutes"}),
            "duration_format",
            ("rules", 2, "for"),
            id="for-bad-duration",
        ),
        pytest.param(
            with_rule(2, **{"for": -5}),
            "greater_than_equal",
            ("rules", 2, "for"),
            id="for-negative",
        ),
        pytest.param(
            with_rule(2, **{"for": True}),
            "duration_format",
            ("rules", 2, "for"),
            id="for-bool",
        ),
        pytest.param(
            with_rule(2, hold="soon"),
            "duration_format",
            ("rules", 2, "hold"),
            id="hold-bad-duration",
        ),
        pytest.param(
            with_rule(2, severity="critical"),
            "enum",
            ("rules", 2, "severity"),
            id="unknown-severity",
        ),
        pytest.param(
            with_rule(2, no_data="ignore"),
            "enum",
            ("rules", 2, "no_data"),
            id="unknown-no-data",
        ),
        pytest.param(
            with_rule(2, promise_kinds=["callback"]),
            "enum",
            ("rules", 2, "promise_kinds", 0),
            id="unknown-promise-kind",
        ),
        pytest.param(
            with_rule(2, name="Overdue Now"),
            "string_pattern_mismatch",
            ("rules", 2, "name"),
            id="bad-rule-name",
        ),
        pytest.param(
            with_rule(2, fro="5m"),
            "extra_forbidden",
            ("rules", 2, "fro"),
            id="misspelt-field",
        ),
        pytest.param(
            config(receivers=[{"name": "chat", "type": "slack", "url_env": "lower_case"}]),
            "string_pattern_mismatch",
            ("receivers", 0, "slack", "url_env"),
            id="receiver-env-name",
        ),
    ],
)
def test_error_loc_names_rule_index_and_field(
    data: dict[str, Any], type_: str, loc: tuple[int | str, ...]
) -> None:
    assert error(data, type_)[0] == loc


def test_unknown_window_names_the_allowed_windows() -> None:
    bad = {"long": "2h", "short": "5m", "factor": 14.4, "severity": "page"}
    data = with_rule(0, condition={"type": "burn_rate", "objective": 0.95, "windows": [bad]})
    loc, msg = error(data, "window_name")
    assert loc == ("rules", 0, "condition", "burn_rate", "windows", 0, "long")
    assert "5m, 30m, 1h, 6h, 24h, 7d" in msg


@pytest.mark.parametrize(
    ("condition", "loc"),
    [
        (
            {"type": "divergence", "window": "90m", "max_ratio": 2},
            ("rules", 1, "condition", "divergence", "window"),
        ),
        (
            {"type": "csat", "window": "1d", "floor": 4},
            ("rules", 1, "condition", "csat", "window"),
        ),
    ],
)
def test_unknown_window_rejected_in_every_condition(
    condition: dict[str, Any], loc: tuple[int | str, ...]
) -> None:
    found_loc, msg = error(with_rule(1, condition=condition), "window_name")
    assert found_loc == loc
    assert "5m, 30m, 1h, 6h, 24h, 7d" in msg


def test_unknown_window_message_names_the_bad_value() -> None:
    bad = {"long": "2h", "short": "5m", "factor": 14.4, "severity": "page"}
    data = with_rule(0, condition={"type": "burn_rate", "objective": 0.95, "windows": [bad]})
    _, msg = error(data, "window_name")
    assert msg == "unknown window '2h': the scorer publishes 5m, 30m, 1h, 6h, 24h, 7d"


@pytest.mark.parametrize(("long", "short"), [("1h", "1h"), ("1h", "6h"), ("5m", "7d")])
def test_short_window_must_be_shorter_than_long(long: str, short: str) -> None:
    windows = [{"long": long, "short": short, "factor": 2, "severity": "page"}]
    data = with_rule(0, condition={"type": "burn_rate", "objective": 0.95, "windows": windows})
    loc, msg = error(data, "window_order")
    assert loc == ("rules", 0, "condition", "burn_rate", "windows", 0)
    assert msg == "the short window must be shorter than long"


def test_duplicate_rule_names_rejected() -> None:
    data = copy.deepcopy(VALID)
    data["rules"][3]["name"] = "overdue-now"
    assert error(data, "rule_repeat")[1] == "two rules share a name"


def test_duplicate_receiver_names_rejected() -> None:
    data = copy.deepcopy(VALID)
    data["receivers"][3]["name"] = "chat"
    assert error(data, "receiver_repeat")[1] == "two receivers share a name"


def test_route_naming_unknown_receiver_rejected() -> None:
    data = config(routes=[{"receivers": ["chat", "pager"]}])
    _, msg = error(data, "receiver_unknown")
    assert msg.startswith("route names unknown receiver")


def test_route_naming_unknown_rule_rejected() -> None:
    data = config(routes=[{"rules": ["no-such-rule"], "receivers": ["chat"]}])
    assert error(data, "rule_unknown")[1].startswith("route names unknown rule")


def test_default_receiver_must_exist() -> None:
    data = config(default_receivers=["nobody"])
    assert error(data, "receiver_unknown")[1].startswith("default_receivers names unknown")


def test_route_needs_a_receiver() -> None:
    assert error(config(routes=[{"receivers": []}]), "too_short")[0] == ("routes", 0, "receivers")


def test_unknown_receiver_message_names_it() -> None:
    _, msg = error(config(routes=[{"receivers": ["pager"]}]), "receiver_unknown")
    assert msg == "route names unknown receiver 'pager'"


@pytest.mark.parametrize(
    "changes",
    [
        {"match": {"Region": "eu"}},
        {"group_by": ["team", "2nd"]},
        {"group_by": ["team-name"]},
    ],
)
def test_label_names_must_be_identifiers(changes: dict[str, Any]) -> None:
    loc, _ = error(with_rule(1, **changes), "label_name")
    assert loc == ("rules", 1)


def test_bad_label_message_names_the_label() -> None:
    _, msg = error(with_rule(1, match={"Region": "eu"}), "label_name")
    assert msg == "bad label name 'Region'"


def test_group_by_label_twice_rejected() -> None:
    loc, _ = error(with_rule(1, group_by=["team", "team"]), "group_by_repeat")
    assert loc == ("rules", 1)


def test_a_file_needs_rules() -> None:
    assert error(config(rules=[]), "too_short")[0] == ("rules",)


# --- routing ------------------------------------------------------------------------------------


ROUTED = config(
    routes=[
        {
            "rules": ["fr-burn"],
            "severities": ["page"],
            "receivers": ["oncall", "chat"],
            "continue": True,
        },
        {"match": {"team": "payments"}, "receivers": ["hook", "chat"]},
        {"severities": ["ticket"], "receivers": ["am"]},
    ],
    default_receivers=["chat"],
)


@pytest.mark.parametrize(
    ("rule", "severity", "labels", "receivers"),
    [
        # route 0 continues, route 1 matches and stops: route 2 is never consulted
        ("fr-burn", Severity.PAGE, {"team": "payments"}, ("oncall", "chat", "hook")),
        # route 0 continues, route 1 does not match, route 2 wants tickets: nothing more
        ("fr-burn", Severity.PAGE, {"team": "search"}, ("oncall", "chat")),
        # route 0 wants pages only; route 1 matches and stops before route 2's ticket match
        ("fr-burn", Severity.TICKET, {"team": "payments"}, ("hook", "chat")),
        ("fr-burn", Severity.TICKET, {"team": "search"}, ("am",)),
        # route 0 names another rule
        ("overdue-now", Severity.PAGE, {"team": "payments"}, ("hook", "chat")),
        ("overdue-now", Severity.TICKET, {}, ("am",)),
        # nothing matches: the default receivers
        ("overdue-now", Severity.PAGE, {"team": "search"}, ("chat",)),
        ("csat-floor", Severity.INFO, {}, ("chat",)),
    ],
)
def test_receivers_for_follows_route_order_and_continue(
    rule: str, severity: Severity, labels: dict[str, str], receivers: tuple[str, ...]
) -> None:
    cfg = AlertsConfig.model_validate(ROUTED)
    assert cfg.receivers_for(rule, severity, labels) == receivers


def test_first_matching_route_wins_without_continue() -> None:
    routes = [{"receivers": ["hook"]}, {"receivers": ["oncall"]}]
    cfg = AlertsConfig.model_validate(config(routes=routes))
    assert cfg.receivers_for("overdue-now", Severity.PAGE, {}) == ("hook",)


def test_continue_on_every_route_collects_each_receiver_once_in_order() -> None:
    routes = [
        {"receivers": ["oncall", "chat"], "continue": True},
        {"receivers": ["chat", "hook"], "continue": True},
        {"receivers": ["am", "oncall"], "continue": True},
    ]
    cfg = AlertsConfig.model_validate(config(routes=routes))
    assert cfg.receivers_for("fr-burn", Severity.PAGE, {}) == ("oncall", "chat", "hook", "am")


def test_no_route_and_no_default_means_nobody() -> None:
    cfg = AlertsConfig.model_validate(config(routes=[], default_receivers=[]))
    assert cfg.receivers_for("fr-burn", Severity.PAGE, {"team": "a"}) == ()


def test_route_match_needs_every_label() -> None:
    routes = [{"match": {"team": "payments", "region": "eu"}, "receivers": ["hook"]}]
    cfg = AlertsConfig.model_validate(config(routes=routes))
    assert cfg.receivers_for("fr-burn", Severity.PAGE, {"team": "payments"}) == ("chat",)
    both = {"team": "payments", "region": "eu"}
    assert cfg.receivers_for("fr-burn", Severity.PAGE, both) == ("hook",)


# --- labels against the scorer's segments --------------------------------------------------------


def test_check_labels_accepts_labels_the_scorer_segments_by() -> None:
    cfg = AlertsConfig.model_validate(VALID)
    assert cfg.check_labels(("team", "region", "priority")) == []


def test_check_labels_reports_each_missing_label_with_rule_and_field() -> None:
    cfg = AlertsConfig.model_validate(VALID)
    assert cfg.check_labels(("team", "priority")) == [
        "rules[1] (slow-delivery).match: label 'region' is not a segment label "
        "(the scorer segments by team, priority)",
        "rules[1] (slow-delivery).group_by: label 'region' is not a segment label "
        "(the scorer segments by team, priority)",
    ]


def test_check_labels_with_no_segment_labels_reports_every_label() -> None:
    cfg = AlertsConfig.model_validate(VALID)
    problems = cfg.check_labels(())
    assert [p.split(":")[0] for p in problems] == [
        "rules[0] (fr-burn).group_by",
        "rules[1] (slow-delivery).match",
        "rules[1] (slow-delivery).group_by",
        "rules[1] (slow-delivery).group_by",
    ]


@pytest.mark.parametrize(("objective", "fires"), [(0.9, False), (0.95, True)])
def test_a_burn_factor_above_the_highest_possible_burn_is_refused(
    objective: float, fires: bool
) -> None:
    # At 90 % the most a window can burn is 1 / 0.1 = 10x: a 14.4x page could never fire.
    condition = {"type": "burn_rate", "objective": objective}
    document = {"version": "1", "rules": [{"name": "r", "condition": condition}]}
    if fires:
        AlertsConfig.model_validate(document)
        return
    with pytest.raises(ValidationError) as caught:
        AlertsConfig.model_validate(document)
    errors = [e for e in caught.value.errors() if e["type"] == "factor_unreachable"]
    assert errors[0]["loc"][:3] == ("rules", 0, "condition")
    assert "windows[0]: factor 14.4 can never fire at objective 0.9" in errors[0]["msg"]
    assert "highest possible burn rate is 10.0" in errors[0]["msg"]


# --- the file, as the alerter loads it at start ---------------------------------------------------


def test_the_shipped_alerts_file_loads_with_the_scorers_default_segments() -> None:
    config = load_alerts(REPO / "deploy" / "config" / "alerts.yaml", ("team", "region", "priority"))
    assert {r.name for r in config.rules} >= {"first-response-burn", "overdue-now"}
    for rule in config.rules:
        assert (REPO / rule.runbook_url).is_file(), f"{rule.name}: runbook {rule.runbook_url}"


def test_a_bad_rule_stops_the_loader_naming_the_rule_and_the_field(tmp_path: Path) -> None:
    document = yaml.safe_load((REPO / "deploy" / "config" / "alerts.yaml").read_text())
    document["rules"][1]["condition"]["windows"] = [
        {"long": "2h", "short": "5m", "factor": 14.4, "severity": "page"}
    ]
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigFileError) as caught:
        load_alerts(path)
    message = str(caught.value)
    assert "rules[1] (resolution-burn).condition.burn_rate.windows[0].long" in message
    assert "unknown window '2h'" in message


def test_a_label_the_scorer_does_not_segment_by_is_refused(tmp_path: Path) -> None:
    document = yaml.safe_load((REPO / "deploy" / "config" / "alerts.yaml").read_text())
    document["rules"][0]["group_by"] = ["customer_tier"]
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigFileError, match=r"rules\[0\] \(first-response-burn\)\.group_by"):
        load_alerts(path, ("team", "region", "priority"))

"""deploy/prometheus and deploy/alertmanager: accepted by promtool and amtool, rules unit-tested.

Also: the rules read only metrics and labels the services export, and the alerting rules keep
mirroring the alerter's defaults (deploy/config/alerts.yaml). promtool and the Alertmanager come
from the repo's scripts (deploy/local/promtool.sh, deploy/local/alertmanager.sh), which install
Debian's packages on a fresh machine; no Kafka or PostgreSQL is needed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from gapwatch.core.alerts.rules import (
    AlertsConfig,
    BurnRateCondition,
    CsatCondition,
    DivergenceCondition,
    OverdueCondition,
    Rule,
)
from gapwatch_alerter.metrics import AlerterMetrics
from gapwatch_alerter.settings import AlerterSettings
from gapwatch_ingest.metrics import IngestMetrics
from gapwatch_ingest.settings import IngestSettings
from gapwatch_scorer.metrics import ScorerMetrics
from gapwatch_scorer.settings import ScorerSettings
from tests.integration.conftest import (
    REPO,
    alertmanager_script,
    free_port,
    stop_process,
    wait_until_ready,
)

pytestmark = pytest.mark.integration

PROMETHEUS = REPO / "deploy" / "prometheus"
CONFIGS = {"compose": PROMETHEUS / "prometheus.yml", "local": PROMETHEUS / "prometheus.local.yml"}
RULE_FILES = (PROMETHEUS / "rules" / "recording.yml", PROMETHEUS / "rules" / "alerts.yml")
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
ALERTER_RULES = REPO / "deploy" / "config" / "alerts.yaml"

SEGMENT_LABELS = tuple(ScorerSettings.model_fields["scorer_segment_labels"].default.split(","))
PORTS = {
    "gapwatch-ingest": ("ingest", IngestSettings.model_fields["ingest_port"].default),
    "gapwatch-scorer": ("scorer", ScorerSettings.model_fields["scorer_port"].default),
    "gapwatch-alerter": ("alerter", AlerterSettings.model_fields["alerter_port"].default),
}
# Labels Prometheus adds to every scraped series (job, instance) and the scrape configs' own.
TARGET_LABELS = frozenset({"job", "instance", "service"})
SEVERITIES = frozenset({"page", "ticket", "info"})

RECORDED = re.compile(r"(?<![\w:])[a-z_]+:[a-z0-9_]+:[a-z0-9_]+(?![\w:])")
EXPORTED = re.compile(r"(?<![\w:])(?:gapwatch_[a-z0-9_]+|up)(?![\w:])")
SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
DURATION = re.compile(r"(\d+)([smhd])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# --- tools ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    """The promtool binary; deploy/local/promtool.sh installs it on a fresh machine."""
    out = subprocess.run(
        ["bash", str(REPO / "deploy" / "local" / "promtool.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, f"deploy/local/promtool.sh failed:\n{out.stderr}"
    return out.stdout.strip()


@pytest.fixture(scope="module")
def alertmanager_binary() -> Path:
    """The Alertmanager the repo's script uses (installed with the package if missing)."""
    out = alertmanager_script("binary")
    assert out.returncode == 0, f"deploy/local/alertmanager.sh binary failed:\n{out.stderr}"
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def amtool(alertmanager_binary: Path) -> str:
    """amtool ships beside the alertmanager binary (Debian: /usr/bin, upstream: the tarball)."""
    for candidate in (alertmanager_binary.parent / "amtool", shutil.which("amtool")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail(f"no amtool beside {alertmanager_binary} or on PATH")


def run(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def succeeds(out: subprocess.CompletedProcess[str]) -> str:
    text = out.stdout + out.stderr
    assert out.returncode == 0, f"{' '.join(out.args)} exited {out.returncode}:\n{text}"
    return text


def fails(out: subprocess.CompletedProcess[str]) -> str:
    text = out.stdout + out.stderr
    assert out.returncode != 0, f"{' '.join(out.args)} accepted a broken file:\n{text}"
    return text


# --- reading the files ----------------------------------------------------------------------------


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load(path)["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return rules(PROMETHEUS / "rules" / "alerts.yml")


def seconds(duration: str) -> int:
    parts = DURATION.findall(duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(int(n) * UNIT_SECONDS[u] for n, u in parts)


def exported() -> dict[str, frozenset[str]]:
    """Every sample name the three services expose, with its label names.

    Built from the services' own metrics classes on a fresh registry. A labelled metric shows no
    sample until it has a child, so one child is made per metric (label values do not matter).
    """
    registry = CollectorRegistry()
    owners = (
        IngestMetrics(registry),
        ScorerMetrics(registry, SEGMENT_LABELS),
        AlerterMetrics(registry),
    )
    for owner in owners:
        for attribute in vars(owner).values():
            # A family of metrics (the scorer's window gauges) is a dict of them.
            for metric in attribute.values() if isinstance(attribute, dict) else [attribute]:
                # _labelnames: prometheus_client keeps no public accessor for label names.
                if isinstance(metric, MetricWrapperBase) and metric._labelnames:
                    metric.labels(*("x",) * len(metric._labelnames))
    found: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in found.items()}


def strip_quoted(expr: str) -> str:
    return QUOTED.sub('""', expr)


def selectors(expr: str) -> Iterator[tuple[str, frozenset[str]]]:
    """(metric name, label names matched) of every `name{...}` selector in a PromQL expression."""
    for name, matchers in SELECTOR.findall(strip_quoted(expr)):
        yield name, frozenset(MATCHER.findall(matchers))


# --- Prometheus configs ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_prometheus_config_passes_promtool(promtool: str, name: str) -> None:
    # promtool resolves rule_files relative to the config file and checks each rule file too.
    text = succeeds(run(promtool, "check", "config", CONFIGS[name]))
    assert "SUCCESS: 2 rule files found" in text, text
    for rule_file in RULE_FILES:
        assert f"Checking {rule_file}" in text, text


def test_prometheus_configs_scrape_the_three_services() -> None:
    configs = {name: load(path) for name, path in CONFIGS.items()}
    hosts = {"compose": None, "local": "127.0.0.1"}
    alertmanagers = {"compose": "alertmanager:9093", "local": "127.0.0.1:19094"}
    for name, config in configs.items():
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        assert set(jobs) == set(PORTS), name
        for job_name, (service, port) in PORTS.items():
            targets = [t for c in jobs[job_name]["static_configs"] for t in c["targets"]]
            assert targets == [f"{hosts[name] or service}:{port}"], (name, job_name)
            assert jobs[job_name].get("metrics_path", "/metrics") == "/metrics"
        am_targets = [
            t
            for am in config["alerting"]["alertmanagers"]
            for c in am["static_configs"]
            for t in c["targets"]
        ]
        assert am_targets == [alertmanagers[name]], name
    assert configs["compose"]["rule_files"] == configs["local"]["rule_files"]
    assert configs["compose"]["global"] == configs["local"]["global"]
    # The local Alertmanager is the one the alerter notifies (deploy/local/alertmanager.sh).
    alerter = AlertsConfig.model_validate(load(ALERTER_RULES))
    urls = [r.url for r in alerter.receivers if r.type == "alertmanager"]
    assert urls == [f"http://{alertmanagers['local']}"]


# --- rules ----------------------------------------------------------------------------------------


def test_rule_files_pass_promtool(promtool: str) -> None:
    text = succeeds(run(promtool, "check", "rules", *RULE_FILES))
    assert text.count("SUCCESS") == len(RULE_FILES), text


def test_rule_unit_tests_pass(promtool: str) -> None:
    assert {p.name for p in RULE_TESTS} >= {
        "burn_rate.yml",
        "overdue.yml",
        "quantiles.yml",
        "pipeline.yml",
    }
    # Rule files in the tests are relative to each test file: run from anywhere.
    text = succeeds(run(promtool, "test", "rules", *RULE_TESTS, cwd=PROMETHEUS / "tests"))
    assert text.count("SUCCESS") == len(RULE_TESTS), text


def test_broken_rules_fail(promtool: str, tmp_path: Path) -> None:
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, copy)
    alerts_file = copy / "rules" / "alerts.yml"
    original = alerts_file.read_text()

    # A PromQL syntax error fails the check.
    alerts_file.write_text(original.replace('{state="overdue"} > 25', '{state="overdue"} > > 25'))
    assert "> > 25" in alerts_file.read_text()
    text = fails(run(promtool, "check", "rules", alerts_file))
    assert "parse error" in text, text

    # A threshold off by one (25 overdue would page) fails the unit tests at the edge.
    alerts_file.write_text(original.replace('{state="overdue"} > 25', '{state="overdue"} >= 25'))
    text = fails(run(promtool, "test", "rules", copy / "tests" / "overdue.yml"))
    assert "overdue-now" in text and 'team="billing"' in text, text

    # An error ratio that counts late deliveries as judged promises moves the recorded values.
    recording = copy / "rules" / "recording.yml"
    recording.write_text(
        recording.read_text().replace("met|breached", "met|breached|delivered_late")
    )
    alerts_file.write_text(original)
    text = fails(run(promtool, "test", "rules", copy / "tests" / "burn_rate.yml"))
    assert "team_kind:gapwatch_promise_error:ratio_rate5m" in text, text


def test_rules_read_only_exported_metrics_and_labels() -> None:
    metrics = exported()
    recorded = {rule["record"] for rule in rules(PROMETHEUS / "rules" / "recording.yml")}
    labels = set().union(*metrics.values()) | set(SEGMENT_LABELS) | TARGET_LABELS
    unknown: list[str] = []
    used: set[str] = set()
    for path in RULE_FILES:
        for rule in rules(path):
            name = rule.get("record") or rule["alert"]
            expr = rule["expr"]
            # Annotations may query recordings ({{ query "..." }}): those names must exist too.
            templates = " ".join(rule.get("annotations", {}).values())
            bare = strip_quoted(expr)
            for metric in EXPORTED.findall(bare):
                used.add(metric)
                if metric != "up" and metric not in metrics:
                    unknown.append(f"{name}: metric {metric} is not exported by any service")
            for ref in RECORDED.findall(bare) + RECORDED.findall(templates):
                if ref not in recorded:
                    unknown.append(f"{name}: recording {ref} is not defined in recording.yml")
            for metric, matched in selectors(expr):
                known = metrics.get(metric, labels) | TARGET_LABELS
                unknown += [f"{name}: {metric} has no label {m}" for m in sorted(matched - known)]
            for group in GROUPING.findall(bare):
                grouped = {label.strip() for label in group.split(",") if label.strip()}
                unknown += [f"{name}: no metric has a label {g}" for g in sorted(grouped - labels)]
    assert not unknown, "\n".join(unknown)
    # The rules cover the scorer's outcomes, every histogram and the open-promise gauge.
    assert {
        "gapwatch_promise_outcomes_total",
        "gapwatch_promise_gap_seconds_bucket",
        "gapwatch_promise_promised_seconds_bucket",
        "gapwatch_promise_delivered_seconds_bucket",
        "gapwatch_open_promises",
    } <= used


def test_rule_unit_tests_feed_exported_series() -> None:
    """The unit tests' input series are series the services expose, with their labels."""
    metrics = exported()
    wrong: list[str] = []
    for path in RULE_TESTS:
        for test in load(path)["tests"]:
            for series in test["input_series"]:
                for metric, matched in selectors(series["series"]):
                    if metric == "up":
                        continue
                    if metric not in metrics:
                        wrong.append(f"{path.name}: {metric} is not exported")
                    elif extra := matched - metrics[metric] - TARGET_LABELS:
                        wrong.append(f"{path.name}: {metric} has no labels {sorted(extra)}")
    assert not wrong, "\n".join(wrong)


def test_recording_rule_names_follow_level_metric_operations() -> None:
    names = [rule["record"] for rule in rules(PROMETHEUS / "rules" / "recording.yml")]
    assert len(names) == len(set(names)), "a recording rule is defined twice"
    for name in names:
        assert RECORDED.fullmatch(name), name
        level, metric, operations = name.split(":")
        assert metric.startswith("gapwatch_") and not metric.endswith("_total"), name
        assert set(level.split("_")) <= {*SEGMENT_LABELS, "kind", "outcome", "state", "le"}, name
        assert re.fullmatch(
            r"(ratio_|p50_|p90_)?rate(5m|30m|1h|2h|6h|1d|3d|28d)|sum|ratio|days", operations
        ), name


def test_slo_figures_follow_the_alerters_objectives_and_all_four_window_pairs() -> None:
    """Issue 24: what SLO tools give: objective and period as metrics, burn over the SRE
    workbook's four window pairs, and the error budget remaining over the period."""
    config = AlertsConfig.model_validate(load(ALERTER_RULES))
    recorded = {r["record"]: r["expr"] for r in rules(PROMETHEUS / "rules" / "recording.yml")}
    objective = recorded["kind:gapwatch_slo_objective:ratio"]
    for rule in config.rules:
        if isinstance(rule.condition, BurnRateCondition):
            (kind,) = rule.promise_kinds
            wanted = f'label_replace(vector({rule.condition.objective:g}), "kind", "{kind}"'
            assert wanted in objective, (rule.name, objective)
    for long, short in (("1h", "5m"), ("6h", "30m"), ("1d", "2h"), ("3d", "6h")):
        for window in (long, short):
            assert f"team_kind:gapwatch_slo_burn:ratio_rate{window}" in recorded, window
    assert "team_kind:gapwatch_slo_error_budget_remaining:ratio_rate28d" in recorded
    assert "kind:gapwatch_slo_period:days" in recorded


def test_alerts_carry_severity_for_and_runbooks() -> None:
    for rule in alerts():
        name = rule["alert"]
        # The alerter's style: its rule names; pipeline-health alerts are gapwatch-*.
        if "rule" in rule["labels"]:
            assert name == rule["labels"]["rule"], name
        else:
            assert re.fullmatch(r"gapwatch(-[a-z]+)+", name), name
        assert seconds(rule["for"]) > 0, name
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        runbook = REPO / annotations["runbook_url"]
        assert runbook.is_file() and runbook.parent == REPO / "docs" / "runbooks", name
        if "rule" in rule["labels"]:
            assert runbook.name == f"{rule['labels']['rule']}.md", name


def test_alerts_mirror_the_alerter_defaults() -> None:
    """Each default rule of deploy/config/alerts.yaml has its Prometheus twin, same numbers."""
    config = AlertsConfig.model_validate(load(ALERTER_RULES))
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for rule in alerts():
        if "rule" in rule["labels"]:
            by_rule.setdefault(rule["labels"]["rule"], []).append(rule)
    mirrored = {r.name for r in config.rules}
    assert set(by_rule) == mirrored
    for rule in config.rules:
        if rule.name in mirrored:
            check_twin(rule, by_rule[rule.name])


def check_twin(rule: Rule, twins: list[dict[str, Any]]) -> None:
    for twin in twins:
        assert seconds(twin["for"]) == rule.for_, rule.name
        # Resolves only after the alerter's hold: a flap it absorbs does not page here.
        assert seconds(twin["keep_firing_for"]) == rule.hold, rule.name
        # One alert-name style with the alerter: its Alertmanager alerts are named by rule.
        assert twin["alert"] == rule.name, f"{rule.name}: alertname {twin['alert']}"
    condition = rule.condition
    if isinstance(condition, BurnRateCondition):
        (kind,) = rule.promise_kinds
        level = "_".join((*rule.group_by, "kind"))
        assert len(twins) == len(condition.windows), rule.name
        for pair in condition.windows:
            (twin,) = [t for t in twins if t["labels"]["severity"] == pair.severity.value]
            threshold = f">= {round(pair.factor * (1 - condition.objective), 6):g}"
            expr = " ".join(twin["expr"].split())
            for window in (pair.long, pair.short):
                ratio = f'{level}:gapwatch_promise_error:ratio_rate{window}{{kind="{kind}"}}'
                assert f"{ratio} {threshold}" in expr, (rule.name, pair, expr)
            volume = (
                f'{level}:gapwatch_promise_judged:rate{pair.long}{{kind="{kind}"}} '
                f"* {seconds(pair.long)} >= {condition.min_events}"
            )
            assert volume in expr, (rule.name, pair, expr)
    elif isinstance(condition, OverdueCondition):
        (twin,) = twins
        assert twin["labels"]["severity"] == rule.severity.value
        assert rule.group_by == ("team",) and not rule.promise_kinds, rule.name
        expr = " ".join(twin["expr"].split())
        overdue = f'team_state:gapwatch_open_promises:sum{{state="overdue"}} > {condition.above}'
        assert expr == overdue, expr
    elif isinstance(condition, DivergenceCondition):
        (twin,) = twins
        (kind,) = rule.promise_kinds
        assert twin["labels"]["severity"] == rule.severity.value
        expr = " ".join(twin["expr"].split())
        window = condition.window
        assert f'p90_rate{window}{{kind="{kind}"}} > {condition.max_gap_p90:g}' in expr, expr
        assert f'p90_rate{window}{{kind="{kind}"}} > {condition.max_ratio:g}' in expr, expr
        volume = (
            f'judged:rate{window}{{kind="{kind}"}} * {seconds(window)} >= {condition.min_events}'
        )
        assert volume in expr, expr
    elif isinstance(condition, CsatCondition):
        (twin,) = twins
        assert twin["labels"]["severity"] == rule.severity.value
        assert rule.group_by == ("team",) and condition.window == "24h", rule.name
        expr = " ".join(twin["expr"].split())
        assert expr == (
            f"team:gapwatch_csat_score_24h:sum / team:gapwatch_csat_answers_24h:sum "
            f"< {condition.floor:g} and team:gapwatch_csat_answers_24h:sum "
            f">= {condition.min_responses}"
        ), expr
    else:
        pytest.fail(f"{rule.name}: no check for {type(condition).__name__}")


# --- Alertmanager ---------------------------------------------------------------------------------


def test_alertmanager_config_passes_amtool(amtool: str) -> None:
    text = succeeds(run(amtool, "check-config", ALERTMANAGER_CONFIG))
    assert "2 inhibit rules" in text and "3 receivers" in text, text


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (
            ("alertname=first-response-burn", "team=billing", "severity=page"),
            "pagerduty-oncall",
        ),
        (("alertname=first-response-burn", "team=billing", "severity=ticket"), "slack-tickets"),
        (("alertname=gapwatch-target-down", "severity=info"), "default-webhook"),
    ],
)
def test_alertmanager_routes_by_severity(
    amtool: str, labels: tuple[str, ...], receiver: str
) -> None:
    out = run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={receiver}",
        *labels,
    )
    assert out.stdout.strip() == receiver, out.stdout + out.stderr
    succeeds(out)


def test_broken_alertmanager_config_fails(amtool: str, tmp_path: Path) -> None:
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(ALERTMANAGER_CONFIG.read_text().replace("routing_key_file:", "routing_kye:"))
    assert "field routing_kye not found" in fails(run(amtool, "check-config", broken))


def test_alertmanager_config_holds_no_secrets() -> None:
    config = load(ALERTMANAGER_CONFIG)
    text = ALERTMANAGER_CONFIG.read_text()
    # Inline credentials have a *_file twin; only the file form may appear.
    for field in ("routing_key", "service_key", "api_url", "api_key", "password", "token"):
        assert not re.search(rf"^\s*-?\s*{field}:", text, re.MULTILINE), field
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            assert hook["url"].startswith("http://127.0.0.1:9/"), hook


def test_alertmanager_inhibits_the_ticket_under_a_page(
    alertmanager_binary: Path, tmp_path: Path
) -> None:
    """The example config in a real Alertmanager: a page mutes the same rule's ticket, per team.

    Nothing is notified: the receivers' secret files do not exist and the webhooks point at the
    discard port, and the test ends well within group_wait.
    """
    port = free_port()
    log_path = tmp_path / "alertmanager.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                str(alertmanager_binary),
                f"--config.file={ALERTMANAGER_CONFIG}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until_ready("alertmanager", process, log_path, ready, timeout=30)
        rule = "first-response-burn"
        sent = [
            {"labels": {"alertname": rule, "team": "billing", "severity": "page"}},
            {"labels": {"alertname": rule, "team": "billing", "severity": "ticket"}},
            {"labels": {"alertname": rule, "team": "support", "severity": "ticket"}},
        ]
        response = httpx.post(f"{url}/api/v2/alerts", json=sent, timeout=5)
        assert response.status_code == 200, response.text

        # The inhibitor follows the alert stream asynchronously: poll, with a deadline.
        deadline = time.monotonic() + 15
        while True:
            got = httpx.get(f"{url}/api/v2/alerts", timeout=5).json()
            states = {
                (a["labels"]["team"], a["labels"]["severity"]): a["status"]["state"] for a in got
            }
            if states.get(("billing", "ticket")) == "suppressed" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert states == {
            ("billing", "page"): "active",
            ("billing", "ticket"): "suppressed",
            ("support", "ticket"): "active",
        }
        receivers = {
            (a["labels"]["team"], a["labels"]["severity"]): [r["name"] for r in a["receivers"]]
            for a in got
        }
        assert receivers[("billing", "page")] == ["pagerduty-oncall"]
        assert receivers[("support", "ticket")] == ["slack-tickets"]
    finally:
        stop_process(process)

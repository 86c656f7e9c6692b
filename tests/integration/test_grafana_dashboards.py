"""The Grafana dashboards: well formed, valid PromQL, and every metric they chart is exported."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gapwatch.core.examples import EXAMPLES
from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.clients import reliable_producer
from gapwatch.kafka.settings import KafkaSettings
from gapwatch.simulation import Simulator
from tests.integration.alerter_support import (
    FlakyWebhook,
    burn_rule,
    fresh_schema,
    publish_round,
    start_alerter,
    webhook_receiver,
    write_rules,
)
from tests.integration.conftest import REPO, IngestProcess, stop_process
from tests.integration.scorer_support import bulk_load, start_scorer

pytestmark = pytest.mark.integration

DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# deploy/config/alerts.yaml links to the first three; the pipeline board is for the operators.
UIDS = {"gapwatch-overview", "gapwatch-segment", "gapwatch-satisfaction", "gapwatch-pipeline"}

# Concrete values for template variables, so an expr can go through promtool. An unknown
# variable fails the test: a new dashboard variable needs a value here.
VARIABLES = {
    "team": "billing",
    "region": "emea",
    "priority": "p2",
    "kind": "first_response",
    "window": "1h",
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "datasource": "prometheus",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


# --- reading the dashboards -------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    where: str  # file, panel and refId (or variable), for messages
    expr: str  # as written in the dashboard, template variables included


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variable_selector(query: str) -> str | None:
    """The PromQL inside a Prometheus variable query (`label_values(selector, label)` and
    `query_result(expr)`); None for `label_values(label)`, which names no metric."""
    query = query.strip()
    if m := re.fullmatch(r"label_values\((.*),\s*\w+\s*\)", query, re.S):
        return m.group(1)
    if re.fullmatch(r"label_values\(\s*\w+\s*\)", query):
        return None
    if m := re.fullmatch(r"query_result\((.*)\)", query, re.S):
        return m.group(1)
    raise AssertionError(f"unknown variable query form: {query!r}")


def queries(path: Path) -> list[Query]:
    board = load(path)
    found = []
    for panel in panels(board):
        for t in panel.get("targets", []):
            if t.get("expr"):
                where = f"{path.name}: panel {panel.get('title')!r} target {t.get('refId')}"
                found.append(Query(where, t["expr"]))
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        raw = var["query"]
        text = raw.get("query", "") if isinstance(raw, dict) else raw
        selector = variable_selector(text)
        if selector is not None:
            found.append(Query(f"{path.name}: variable {var['name']}", selector))
    return found


def all_queries() -> list[Query]:
    return [q for path in dashboard_files() for q in queries(path)]


def substitute(expr: str) -> str:
    """The expr with every template variable replaced by a concrete value."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in VARIABLES:
            raise AssertionError(f"no test value for template variable ${name} in {expr!r}")
        return VARIABLES[name]

    return VARIABLE.sub(value, expr)


# --- PromQL: validity (promtool) and the metric names it reads --------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    """The promtool binary; deploy/local/promtool.sh installs it on a fresh machine."""
    out = subprocess.run(
        ["bash", str(REPO / "deploy" / "local" / "promtool.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, f"deploy/local/promtool.sh failed:\n{out.stderr}"
    return out.stdout.strip()


def promql_problems(promtool: str, exprs: list[str], work: Path) -> str:
    """promtool's complaint about `exprs` as recording rules; empty when all are valid PromQL."""
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)
                ],
            }
        ]
    }
    path = work / "dashboards.rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    out = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    return "" if out.returncode == 0 else f"exit {out.returncode}\n{out.stdout}{out.stderr}"


AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "atan2", "inf", "nan"}  # fmt: skip
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.I)
TOKEN = re.compile(r"(?P<number>(?:\d|\.\d)[\w.]*)|(?P<name>[A-Za-z_:][\w:]*)")


def metric_names(expr: str) -> set[str]:
    """Metric names an expr reads: identifiers that are not functions, aggregations, keywords,
    label names (in matchers and grouping clauses), numbers or durations."""
    names = set(re.findall(r'__name__\s*=\s*"([A-Za-z_:][\w:]*)"', expr))
    for alternatives in re.findall(r'__name__\s*=~\s*"([\w:|]+)"', expr):  # a|b: both read
        names.update(alternatives.split("|"))
    text = STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = GROUPING.sub(" ", text)  # by (...), on (...), group_left (...)
    for m in TOKEN.finditer(text):
        name = m.group("name")
        if name is None or name.lower() in KEYWORDS or name in AGGREGATIONS:
            continue
        if text[m.end() :].lstrip().startswith("("):
            continue  # a function call
        names.add(name)
    return names


# --- fast checks (promtool only, no services) -------------------------------------------------


def test_every_dashboard_is_well_formed():
    files = dashboard_files()
    assert files, f"no dashboards in {DASHBOARDS}"
    boards = {path.name: load(path) for path in files}
    uids = [b.get("uid") for b in boards.values()]
    titles = [b.get("title") for b in boards.values()]
    assert len(set(uids)) == len(uids), f"duplicate uid: {uids}"
    assert len(set(titles)) == len(titles), f"duplicate title: {titles}"
    assert UIDS <= set(uids), f"missing dashboards: {UIDS - set(uids)}"
    for name, board in boards.items():
        assert board.get("schemaVersion", 0) >= 36, name
        assert board.get("title"), name
        ids = [p.get("id") for p in panels(board)]
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids {ids}"
        for panel in panels(board):
            where = f"{name}: panel {panel.get('title')!r}"
            assert panel.get("type") != "row", f"{where}: rows are not used (no datasource)"
            assert panel.get("datasource") == DATASOURCE, where
            targets = panel.get("targets", [])
            assert targets, f"{where} has no targets"
            for t in targets:
                assert t.get("expr", "").strip(), f"{where} target {t.get('refId')}: no expr"
                assert t.get("datasource") == DATASOURCE, f"{where} target {t.get('refId')}"
            refs = [t.get("refId") for t in targets]
            assert len(set(refs)) == len(refs), f"{where}: duplicate refIds {refs}"
        for var in board.get("templating", {}).get("list", []):
            assert var["name"] in VARIABLES, f"{name}: variable {var['name']} has no test value"
            if var.get("type") == "query":
                assert var.get("datasource") == DATASOURCE, f"{name}: variable {var['name']}"
        kinds = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
        assert kinds.get("datasource", {}).get("type") == "datasource", f"{name}: no datasource var"
        # No uid but the variable (and Grafana's own annotations): imported into a Grafana whose
        # Prometheus has another uid, every panel still finds its data.
        uids = set(re.findall(r'"uid": *"([^"]+)"', json.dumps(board)))
        assert uids <= {"${datasource}", "-- Grafana --", board["uid"]}, f"{name}: {uids}"


def test_every_expr_is_valid_promql(promtool: str, tmp_path: Path):
    found = all_queries()
    exprs = [substitute(q.expr) for q in found]
    assert all("$" not in e for e in exprs), [e for e in exprs if "$" in e]
    problems = promql_problems(promtool, exprs, tmp_path)
    if problems:
        # Name the culprits: check each expr alone.
        broken = [
            f"{q.where}: {e}"
            for q, e in zip(found, exprs, strict=True)
            if promql_problems(promtool, [e], tmp_path)
        ]
        pytest.fail("invalid PromQL:\n" + "\n".join(broken) + "\n\npromtool said:\n" + problems)


def test_the_promql_check_rejects_a_broken_expr(promtool: str, tmp_path: Path):
    good = 'sum by (team) (rate(gapwatch_promise_outcomes_total{outcome="met"}[5m]))'
    assert promql_problems(promtool, [good], tmp_path) == ""
    for broken in (
        "sum(rate(gapwatch_promise_outcomes_total[5m])",  # unbalanced parenthesis
        "rate(gapwatch_promise_outcomes_total)",  # an instant vector where a range is needed
        "sum(rate(gapwatch_promise_outcomes_total[$window]))",  # a variable left in
    ):
        assert promql_problems(promtool, [good, broken], tmp_path), broken


def test_substitute_fills_every_variable_form():
    expr = 'x{team=~"$team", kind=~"${kind}", region="${region:regex}"}[$__rate_interval]'
    assert substitute(expr) == 'x{team=~"billing", kind=~"first_response", region="emea"}[5m]'
    with pytest.raises(AssertionError, match="unknown_var"):
        substitute("x[$unknown_var]")


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "histogram_quantile(0.9, sum by (kind, le) (rate(gapwatch_promise_gap_seconds_bucket"
            '{team=~"billing", le!="+Inf"}[5m])))',
            {"gapwatch_promise_gap_seconds_bucket"},
        ),
        (
            "sum(rate(a_total[5m])) by (code) / ignoring(code) group_left b offset 5m or vector(0)",
            {"a_total", "b"},
        ),
        (
            'max without (figure) (m{figure="sum(x)", window="1h"}) > bool 0.5 '
            "unless on (team) other:recorded",
            {"m", "other:recorded"},
        ),
        ('1e-9 * sum(rate({__name__="by_name", job="by"}[1h:5m])) + Inf', {"by_name"}),
        ('{__name__=~"one_seconds|two_seconds", quantile="0.5"}', {"one_seconds", "two_seconds"}),
        ('label_replace(up, "dst", "$1", "src", "(.*)") and topk(5, z)', {"up", "z"}),
    ],
)
def test_metric_names_are_extracted_from_promql(expr: str, names: set[str]):
    assert metric_names(expr) == names


# --- the live check: every charted metric is exported by the running services ------------------


def sample_names(scrape: str) -> set[str]:
    """Names of the samples in an exposition (a histogram `x` gives x_bucket, x_sum, x_count)."""
    return {
        sample.name
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
    }


async def scrape(http: httpx.AsyncClient, url: str) -> str:
    response = await http.get(url + "/metrics", timeout=10)
    response.raise_for_status()
    return response.text


@pytest.mark.timeout(480)
async def test_every_charted_metric_is_exported_by_the_running_services(
    kafka: KafkaSettings, client: httpx.AsyncClient, ingest: IngestProcess, tmp_path: Path
):
    wanted: dict[str, list[str]] = {}
    for q in all_queries():
        for name in metric_names(substitute(q.expr)):
            wanted.setdefault(name, []).append(q.where)
    assert wanted, "the dashboards chart no metric"

    # A stream the scorer turns into outcomes, histograms, window and open-promise gauges.
    start = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    sim = Simulator(start=start, items_per_second=0.2, seed=34)
    events = list(sim.events_until(start + timedelta(minutes=20)))
    # Feedback on the first ticket replied to, so CSAT (and CSAT by gap bucket) exist.
    replied = next(e for e in events if e["type"] == "gapwatch.ticket.replied.v1")
    feedback = copy.deepcopy(EXAMPLES["gapwatch.feedback.submitted.v1"])
    at = (start + timedelta(minutes=20)).isoformat()
    feedback.update(id="dashboards-feedback-1", subject=replied["subject"], time=at)
    feedback["data"].update(
        feedback_id="F-dashboards-1",
        item_id=replied["subject"],
        item_kind="ticket",
        submitted_at=at,
    )
    stream = tmp_path / "stream.jsonl"
    resolved = copy.deepcopy(EXAMPLES["gapwatch.ticket.resolved.v1"])
    resolved.update(id="dashboards-resolved-1", subject=replied["subject"], time=at)
    resolved["data"].update(ticket_id=replied["subject"], resolved_at=at)
    # A job fixed on its first visit, so the first-time-fix gauges exist.
    created = (start + timedelta(minutes=1)).isoformat()
    job = copy.deepcopy(EXAMPLES["gapwatch.job.scheduled.v1"])
    job.update(id="dashboards-job-1", subject="J-dash-1", time=created)
    job["data"].update(
        job_id="J-dash-1",
        created_at=created,
        window={"start": created, "end": (start + timedelta(hours=3)).isoformat()},
        promised_completion_at=(start + timedelta(hours=4)).isoformat(),
    )
    completed = copy.deepcopy(EXAMPLES["gapwatch.job.completed.v1"])
    completed.update(id="dashboards-job-1-done", subject="J-dash-1", time=at)
    completed["data"].update(job_id="J-dash-1", completed_at=at, fixed=True)
    # feedback joins its item once the item is resolved
    extra = [resolved, feedback, job, completed]
    stream.write_bytes(b"\n".join(orjson.dumps(e) for e in [*events, *extra]) + b"\n")
    hook = FlakyWebhook()
    await hook.start()
    rules = write_rules(tmp_path / "alerts.yaml", [burn_rule()], [webhook_receiver(hook.url)])
    scorer = await asyncio.to_thread(start_scorer, kafka, tmp_path, "dashboards")
    alerter = None
    try:
        async with fresh_schema() as schema:
            alerter = await asyncio.to_thread(start_alerter, kafka, tmp_path, schema, rules)

            # Ingest: one accepted and one rejected request.
            valid = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
            assert (await client.post("/v1/events", content=orjson.dumps(valid))).status_code == 202
            invalid = copy.deepcopy(valid)
            invalid["data"]["opened_at"] = "2026-03-02T09:15:00"  # no offset
            assert (
                await client.post("/v1/events", content=orjson.dumps(invalid))
            ).status_code == 422
            # A record the scorer must dead-letter.
            producer = reliable_producer(kafka)
            await producer.start()
            try:
                tickets = topic_name(Stream.TICKETS, kafka.topic_prefix)
                await producer.send_and_wait(tickets, b"\x00 not json", key=b"T-1001")
            finally:
                await producer.stop()
            await asyncio.to_thread(bulk_load, kafka, stream)
            # A team the simulator does not use slips, so the alerter fires and notifies.
            await publish_round(kafka, {"dashboards": (20, 80)}, ("5m", "30m", "1h", "6h"))

            urls = {"ingest": ingest.url, "scorer": scorer.url, "alerter": alerter.url}
            deadline = time.monotonic() + 240
            async with httpx.AsyncClient() as http:
                while True:
                    exported: dict[str, set[str]] = {}
                    for service, url in urls.items():
                        exported[service] = sample_names(await scrape(http, url))
                    every = set().union(*exported.values())
                    missing = sorted(set(wanted) - every)
                    if not missing:
                        break
                    if time.monotonic() > deadline:
                        lines = [f"  {name}  (used by {wanted[name][0]})" for name in missing]
                        pytest.fail(
                            "metrics the dashboards chart but no running service exports:\n"
                            + "\n".join(lines)
                            + f"\nscorer log tail:\n{scorer.log()[-2000:]}"
                            + f"\nalerter log tail:\n{alerter.log()[-2000:]}"
                        )
                    for what, proc in (("scorer", scorer.process), ("alerter", alerter.process)):
                        assert proc.poll() is None, f"the {what} exited"
                    await asyncio.sleep(1.0)
            assert hook.accepted(), "the alert was delivered to the webhook"
    finally:
        if alerter is not None:
            stop_process(alerter.process)
        stop_process(scorer.process)
        await hook.stop()

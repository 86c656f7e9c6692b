"""`gapwatch demo`: the whole stack on one machine, with a live terminal view of a team slipping.

Runs ingest, scorer and alerter as child processes against the local Kafka, PostgreSQL and
Alertmanager (`make infra`), a Prometheus scraping them, and the simulator's `team-slip`
scenario at 240x (an hour of event time every 15 s), so one run shows a whole incident: the
slipping team's first responses breach, its burn rate pages, it recovers, the alert resolves.

Each run uses fresh topics (a prefix), a fresh PostgreSQL schema and fresh scorer state, so runs
never see each other's data. Ctrl-C, or the end of `--minutes`, stops every process it started,
and only those.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / ".run"
SPEED = 240.0
TOKEN = "dev-token"  # noqa: S105 - the local demo's token, as in `make run`
PORTS = {"ingest": 8081, "scorer": 8082, "alerter": 8083, "prometheus": 19090}
DEMO_POLICIES = REPO / "deploy" / "demo" / "policies.yaml"


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Stack:
    """Every process the demo started, so that it stops those and nothing else."""

    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> Child:
        with log.open("ab") as out:
            # A new session: Ctrl-C in the terminal reaches the demo, which stops the children
            # in order, instead of every child at once mid-write.
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and binaries
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in reversed(self.children):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(remaining)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait(5)

    def check(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None and child.name != "simulator":
                tail = child.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{child.name} exited with {code}; log {child.log}:\n{tail}")


def _ports_free() -> None:
    """Refuse to start over someone else's service: the demo would talk to it instead."""
    for name, port in PORTS.items():
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                raise RuntimeError(
                    f"port {port} ({name}) is in use: stop what listens there "
                    f"(`make run`, `make scorer`, `make alerter`?) and start the demo again"
                )


def _infra_env() -> dict[str, str]:
    path = RUN / "infra.env"
    if not path.exists():
        raise RuntimeError(f"no {path}: run `make infra` (or `make demo`, which does)")
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def _wait(url: str, what: str, stack: Stack, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{what} not ready at {url} within {timeout:.0f}s")


def _metrics(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by name from a /metrics page (empty if it does not answer)."""
    try:
        text = httpx.get(url + "/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


@dataclass
class View:
    """What the terminal shows, refreshed from the services' own endpoints."""

    urls: dict[str, str]
    started: float = field(default_factory=time.monotonic)
    last_accepted: float = 0.0
    last_at: float = 0.0
    rate: float = 0.0
    accepted: float = 0.0
    states: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    fired: dict[str, int] = field(default_factory=dict)
    resolved: dict[str, int] = field(default_factory=dict)
    teams: dict[str, dict[str, float]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def refresh(self) -> None:
        now = time.monotonic()
        ingest = _metrics(self.urls["ingest"])
        accepted = sum(v for _, v in ingest.get("gapwatch_ingest_events_accepted_total", []))
        if self.last_at:
            self.rate = (accepted - self.last_accepted) / max(0.001, now - self.last_at)
        self.accepted, self.last_accepted, self.last_at = accepted, accepted, now
        self._scorer(_metrics(self.urls["scorer"]))
        self._alerts()

    def _scorer(self, scorer: dict[str, list[tuple[dict[str, str], float]]]) -> None:
        teams: dict[str, dict[str, float]] = {}
        met: dict[str, float] = {}
        total: dict[str, float] = {}
        gap: dict[str, float] = {}

        def first_responses_1h(name: str) -> list[tuple[dict[str, str], float]]:
            return [
                (labels, value)
                for labels, value in scorer.get(name, [])
                if labels.get("kind") == "first_response" and labels.get("window") == "1h"
            ]

        for labels, value in first_responses_1h("gapwatch_window_outcomes"):
            team = labels.get("team", "?")
            if labels.get("outcome") == "met":
                met[team] = met.get(team, 0) + value
                total[team] = total.get(team, 0) + value
            elif labels.get("outcome") == "breached":
                total[team] = total.get(team, 0) + value
        for labels, value in first_responses_1h("gapwatch_window_gap_seconds"):
            if labels.get("quantile") == "0.9":
                team = labels.get("team", "?")
                gap[team] = max(gap.get(team, float("-inf")), value)
        for team in total:
            teams.setdefault(team, {})["attainment"] = (
                met.get(team, 0) / total[team] if total[team] else float("nan")
            )
            teams[team]["gap_p90"] = gap.get(team, float("nan"))
        for labels, value in scorer.get("gapwatch_open_promises", []):
            team = labels.get("team", "?")
            state = labels.get("state", "?")
            row = teams.setdefault(team, {})
            row[state] = row.get(state, 0) + value
        self.teams = teams

    def _alerts(self) -> None:
        try:
            alerts = httpx.get(self.urls["alerter"] + "/v1/alerts", timeout=2).json()["alerts"]
        except (httpx.HTTPError, ValueError, KeyError):
            return
        self.alerts = alerts
        clock = time.strftime("%H:%M:%S")
        for alert in alerts:
            fp, state = alert["fingerprint"], alert["state"]
            if self.states.get(fp) == state:
                continue
            self.states[fp] = state
            labels = ", ".join(f"{k}={v}" for k, v in alert["labels"].items())
            name = f"{alert['rule']} ({labels})"
            if state == "firing":
                self.fired[name] = self.fired.get(name, 0) + 1
                self.log.append(f"{clock} [red]FIRING[/] {alert['severity']} {alert['summary']}")
            elif state == "resolved":
                self.resolved[name] = self.resolved.get(name, 0) + 1
                self.log.append(f"{clock} [green]RESOLVED[/] {alert['rule']} ({labels})")
            elif state == "pending":
                self.log.append(f"{clock} [yellow]pending[/] {alert['rule']} ({labels})")

    def render(self, minutes: float | None) -> Group:
        elapsed = time.monotonic() - self.started
        head = Table.grid(padding=(0, 2))
        head.add_row(
            f"[b]gapwatch demo[/b]  team-slip at {SPEED:.0f}x",
            f"{elapsed:.0f}s" + (f" of {minutes * 60:.0f}s" if minutes else "  (Ctrl-C stops)"),
            f"ingest [b]{self.rate:,.0f}[/b] events/s  ({self.accepted:,.0f} in all)",
        )
        teams = Table(title="first responses, last hour of event time", expand=True)
        for column in ("team", "attainment", "gap p90", "open", "at risk", "overdue"):
            teams.add_column(column, justify="left" if column == "team" else "right")
        for team in sorted(self.teams):
            row = self.teams[team]
            attainment = row.get("attainment", float("nan"))
            style = "red" if attainment == attainment and attainment < 0.9 else ""
            gap = row.get("gap_p90", float("nan"))
            shown = "-" if attainment != attainment else f"{attainment:.1%}"  # NaN: no promises
            teams.add_row(
                team,
                f"[{style}]{shown}[/]" if style else shown,
                "-" if gap != gap else f"{gap / 60:+.0f} min",
                f"{row.get('open', 0):.0f}",
                f"{row.get('at_risk', 0):.0f}",
                f"{row.get('overdue', 0):.0f}",
            )
        firing = [a for a in self.alerts if a["state"] == "firing"]
        alerts = Table(title=f"alerts firing: {len(firing)}", expand=True)
        alerts.add_column("severity")
        alerts.add_column("alert")
        alerts.add_column("latest breached")
        for alert in firing:
            alerts.add_row(
                alert["severity"], alert["summary"], ", ".join(alert["latest_breached"][:3])
            )
        events = "\n".join(self.log[-8:]) or "(no transitions yet)"
        links = "  ".join(f"{name}: {url}" for name, url in self.urls.items())
        return Group(
            head, teams, alerts, Panel(events, title="alert transitions"), f"[dim]{links}[/]"
        )


def _prometheus(stack: Stack, work: Path, env: dict[str, str]) -> str | None:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    config = REPO / "deploy" / "prometheus" / "prometheus.local.yml"
    if not Path(binary).exists() or not config.exists():
        return None
    url = f"http://127.0.0.1:{PORTS['prometheus']}"
    stack.start(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{PORTS['prometheus']}",
        ],
        env,
        work / "prometheus.log",
    )
    _wait(url + "/-/ready", "prometheus", stack)
    return url


def run_demo(minutes: float | None, rate: float, console: Console | None = None) -> int:
    console = console or Console()
    infra = _infra_env()
    _ports_free()
    stamp = time.strftime("%Y%m%d%H%M%S")
    work = RUN / "demo" / stamp
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **infra,
        "GAPWATCH_TOPIC_PREFIX": f"demo{stamp}.",
        "GAPWATCH_INGEST_TOKENS": TOKEN,
        "GAPWATCH_INGEST_TOKEN": TOKEN,
        "GAPWATCH_ALERTER_TOKENS": TOKEN,
        "GAPWATCH_ALERTER_DB_SCHEMA": f"demo_{stamp}",
        "GAPWATCH_SCORER_DATA_DIR": str(work / "scorer"),
        "GAPWATCH_SCORER_POLICIES_FILE": str(DEMO_POLICIES),
        "GAPWATCH_SCORER_SNAPSHOT_SECONDS": "2",
        # Event time runs 240x the wall clock: let the windows follow it, and give snapshot
        # records an hour of event time (15 s) before they count as stale.
        "GAPWATCH_SCORER_WINDOWS_LEAD_SECONDS": "172800",
        "GAPWATCH_ALERTER_STALE_SECONDS": "3600",
        # ... and accept event times that far ahead of the wall clock: a year of event time,
        # a day and a half of the demo (the default bound is five minutes).
        "GAPWATCH_MAX_FUTURE_SKEW_SECONDS": str(365 * 86400),
    }
    py = sys.executable
    stack = Stack()
    urls = {
        "ingest": f"http://127.0.0.1:{PORTS['ingest']}",
        "scorer": f"http://127.0.0.1:{PORTS['scorer']}",
        "alerter": f"http://127.0.0.1:{PORTS['alerter']}",
    }
    view = View(urls=dict(urls))
    interrupted = False
    try:
        console.print(f"[b]gapwatch demo[/b]: topics demo{stamp}.*, logs in {work}")
        topics = subprocess.run(  # noqa: S603 - our own interpreter
            [py, "-m", "gapwatch", "topics"], env=env, capture_output=True, text=True
        )
        if topics.returncode != 0:
            raise RuntimeError(f"creating topics failed:\n{topics.stderr}")
        with console.status("starting ingest, scorer and alerter ..."):
            stack.start("ingest", [py, "-m", "gapwatch_ingest"], env, work / "ingest.log")
            stack.start("scorer", [py, "-m", "gapwatch_scorer"], env, work / "scorer.log")
            stack.start("alerter", [py, "-m", "gapwatch_alerter"], env, work / "alerter.log")
            _wait(urls["ingest"] + "/readyz", "ingest", stack)
            _wait(urls["alerter"] + "/readyz", "alerter", stack)
            _wait(urls["scorer"] + "/metrics", "scorer", stack)
        prometheus = _prometheus(stack, work, env)
        if prometheus:
            view.urls["prometheus"] = prometheus
        if "GAPWATCH_ALERTMANAGER_URL" in infra:
            view.urls["alertmanager"] = infra["GAPWATCH_ALERTMANAGER_URL"]
        run_minutes = minutes if minutes is not None else 24 * 60.0
        stack.start(
            "simulator",
            [
                py,
                "-m",
                "gapwatch",
                "simulate",
                "--scenario=team-slip",
                f"--to={urls['ingest']}",
                f"--rate={rate}",
                f"--minutes={run_minutes}",
                f"--speed={SPEED}",
                "--slip-team=billing",
                "--slip-start=0.5",
                "--slip-end=2",
            ],
            env,
            work / "simulator.log",
        )
        deadline = time.monotonic() + run_minutes * 60
        with Live(view.render(minutes), console=console, refresh_per_second=2) as live:
            while time.monotonic() < deadline:
                stack.check()
                view.refresh()
                live.update(view.render(minutes))
                time.sleep(1.0)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        with console.status("stopping what the demo started ..."):
            stack.stop()
    _summary(console, view, work)
    return 130 if interrupted and minutes is not None else 0


def _summary(console: Console, view: View, work: Path) -> None:
    console.print(f"\n[b]summary[/b]: {view.accepted:,.0f} events accepted by ingest")
    for team in sorted(view.teams):
        attainment = view.teams[team].get("attainment", float("nan"))
        if attainment == attainment:  # teams without first-response promises have none
            console.print(f"  {team:<12} first-response attainment (1h) {attainment:.1%}")
    for name in sorted(set(view.fired) | set(view.resolved)):
        console.print(
            f"  alert {name}: fired {view.fired.get(name, 0)}x, "
            f"resolved {view.resolved.get(name, 0)}x"
        )
    if not view.fired:
        console.print(
            "  no alert fired (run longer: the slip starts 30 s in, pages about 1 min in)"
        )
    console.print(f"  logs: {work}")

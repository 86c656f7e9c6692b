"""Deployment files (Dockerfile, docker-compose.yml, deploy/k8s) checked against the code."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from gapwatch.cli import build_parser
from gapwatch.config import load_alerts, load_policies
from gapwatch.kafka.settings import KafkaSettings
from gapwatch.settings import SettingsError, env_name, load_settings
from gapwatch_alerter.settings import AlerterSettings
from gapwatch_ingest.settings import IngestSettings
from gapwatch_scorer.settings import ScorerSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKER_DIR = ROOT / "deploy" / "docker"
SECRETS_EXAMPLE = DOCKER_DIR / "secrets.example"
# Each compose service's secrets: the only variables its own env file may hold.
SECRETS_OF = {
    "postgres": {"POSTGRES_PASSWORD"},
    "ingest": {"GAPWATCH_INGEST_TOKENS"},
    "alerter": {"GAPWATCH_DATABASE_URL", "GAPWATCH_ALERTER_TOKENS"},
    "grafana": {"GF_SECURITY_ADMIN_PASSWORD"},
    "simulator": {"GAPWATCH_INGEST_TOKEN"},
}
K8S_BASE = ROOT / "deploy" / "k8s" / "base"
K8S_OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "example"
PROMETHEUS_RULES = ROOT / "deploy" / "prometheus" / "rules"
CONFIG_DIR = ROOT / "deploy" / "config"

LOCAL_ALERTMANAGER = "http://127.0.0.1:19094"
COMPOSE_ALERTMANAGER = "http://alertmanager:9093"
OVERLAY_ALERTMANAGER = "http://alertmanager.monitoring.svc:9093"
COPY_MARKER = "# ---- copy of deploy/config/alerts.yaml follows\n"

# Which settings class each gapwatch command reads, and where its port and bind address live.
SERVICES: dict[str, type[KafkaSettings]] = {
    "gapwatch-ingest": IngestSettings,
    "gapwatch-scorer": ScorerSettings,
    "gapwatch-alerter": AlerterSettings,
}
PORT_FIELD = {
    "gapwatch-ingest": "ingest_port",
    "gapwatch-scorer": "scorer_port",
    "gapwatch-alerter": "alerter_port",
}
HOST_FIELD = {cmd: field.replace("_port", "_host") for cmd, field in PORT_FIELD.items()}
APP_SOURCE = {
    "gapwatch-ingest": ROOT / "services" / "ingest" / "app.py",
    "gapwatch-scorer": ROOT / "services" / "scorer" / "app.py",
    "gapwatch-alerter": ROOT / "services" / "alerter" / "app.py",
}
# Secrets: never a literal value in docker-compose.yml or a Kubernetes manifest.
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|DATABASE_URL|ROUTING_KEY")
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())
SEGMENT_LABELS = tuple(ScorerSettings.model_fields["scorer_segment_labels"].default.split(","))


# --- what the code defines -----------------------------------------------------------------


def project_scripts() -> dict[str, str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        scripts: dict[str, str] = tomllib.load(f)["project"]["scripts"]
    return scripts


def settings_env_names() -> set[str]:
    names = set()
    for cls in (*SERVICES.values(), KafkaSettings):
        names |= {env_name(cls, field) for field in cls.model_fields}
    return names


def simulator_env_names() -> set[str]:
    """GAPWATCH_* variables `gapwatch simulate` reads itself (not through a settings class)."""
    source = (ROOT / "src" / "gapwatch" / "simulate.py").read_text()
    return set(re.findall(r"os\.environ\.get\(\s*\"(GAPWATCH_[A-Z0-9_]+)\"", source))


def known_env_names() -> set[str]:
    return settings_env_names() | simulator_env_names()


def parse_cli(args: list[str], where: str) -> Any:
    """`gapwatch ARGS` through the CLI's own parser: the subcommand and every flag must exist."""
    try:
        return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: `gapwatch {' '.join(args)}` is not a valid gapwatch command line")


def serves(command: str, path: str) -> bool:
    """Whether the service started by `command` answers `path` (its app declares the route)."""
    return f'"{path}"' in APP_SOURCE[command].read_text()


def load_with_env(
    monkeypatch: pytest.MonkeyPatch, cls: type[BaseSettings], env: dict[str, str]
) -> Any:
    for name in list(os.environ):
        if name.startswith("GAPWATCH_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(cls)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path}: not VARIABLE=value: {line!r}"
            env[name.strip()] = value
    return env


def alerts_copy_body(path: Path) -> str:
    text = path.read_text()
    assert COPY_MARKER in text, f"{path}: missing the line {COPY_MARKER.strip()!r}"
    return text.split(COPY_MARKER, 1)[1]


# --- docker-compose.yml ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_compose() -> str:
    """The docker-compose (v1) binary; installed from Debian's packages when missing."""
    found = shutil.which("docker-compose")
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("docker-compose is not installed and apt-get is not available to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # No recommends: Debian's package recommends the Docker engine, which `config` never needs.
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "docker-compose"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=280)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}"
    found = shutil.which("docker-compose")
    assert found, "apt-get installed docker-compose, but it is not on PATH"
    return found


@pytest.fixture(scope="module")
def compose(docker_compose: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`docker-compose config` of the repo's file, with the example env file as the real one.

    The file and deploy/docker are copied into a temporary project, so a user's own
    deploy/docker/secrets/ neither helps nor breaks the check.
    """
    project = tmp_path_factory.mktemp("compose")
    shutil.copy(COMPOSE_FILE, project / "docker-compose.yml")
    shutil.copytree(
        DOCKER_DIR, project / "deploy" / "docker", ignore=shutil.ignore_patterns("secrets")
    )
    shutil.copytree(SECRETS_EXAMPLE, project / "deploy" / "docker" / "secrets")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(project)}
    done = subprocess.run(
        [docker_compose, "--project-directory", str(project), "config"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    config["_project"] = project
    return config


@pytest.fixture(scope="module")
def compose_raw() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return raw


def gapwatch_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Compose services that run a gapwatch command."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("command") and str(service["command"][0]).startswith("gapwatch")
    }


def port_mappings(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, published port, container port) in compose v1's or v2's `config` form."""
    mappings = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            mappings.append((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
        else:
            host, published, target = str(port).split("/")[0].rsplit(":", 2)
            mappings.append((host, int(published), int(target)))
    return mappings


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str, bool]]:
    """Container path -> (type bind|volume, source, read-only), from v1's or v2's `config`."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            kind, source, target = volume["type"], volume["source"], volume["target"]
            read_only = bool(volume.get("read_only"))
        else:
            source, target, *mode = str(volume).split(":")
            kind = "bind" if source.startswith((".", "/")) else "volume"
            read_only = mode == ["ro"]
        found[target] = (kind, source, read_only)
    return found


def effective_port(command: str, env: dict[str, Any]) -> int:
    field = PORT_FIELD[command]
    name = env_name(SERVICES[command], field)
    default: int = SERVICES[command].model_fields[field].default
    return int(env.get(name, default))


def test_compose_file_is_valid_and_has_the_whole_stack(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "kafka",
        "postgres",
        "topics",
        "ingest",
        "scorer",
        "alerter",
        "prometheus",
        "alertmanager",
        "grafana",
        "simulator",
    }
    profiled = {n for n, s in compose["services"].items() if s.get("profiles")}
    assert profiled == {"simulator"}
    assert compose["services"]["simulator"]["profiles"] == ["demo"]


def test_compose_commands_are_entry_points(compose: dict[str, Any]) -> None:
    scripts = project_scripts()
    services = gapwatch_services(compose)
    commands = {s["command"][0] for s in services.values()}
    assert set(SERVICES) <= commands, "compose must run ingest, scorer and alerter"
    for name, service in services.items():
        command = service["command"]
        assert command[0] in scripts, f"{name}: {command[0]} is not in [project.scripts]"
        assert service["image"] == "gapwatch:local", f"{name}: not the image the Dockerfile builds"
        if command[0] == "gapwatch":
            parse_cli(command[1:], name)
        else:
            assert command[1:] == [], f"{name}: {command[0]} takes no arguments"
    assert compose["services"]["topics"]["command"] == ["gapwatch", "topics"]
    assert compose["services"]["simulator"]["command"][:2] == ["gapwatch", "simulate"]


def test_compose_gapwatch_variables_are_settings(compose: dict[str, Any]) -> None:
    known = known_env_names()
    assert "GAPWATCH_INGEST_TOKEN" in known, "the simulator no longer reads GAPWATCH_INGEST_TOKEN"
    for name, service in compose["services"].items():
        unknown = {v for v in service.get("environment", {}) if v.startswith("GAPWATCH_")} - known
        assert not unknown, f"{name}: no setting reads {sorted(unknown)}"


@pytest.mark.parametrize("command", sorted(SERVICES))
def test_compose_environment_is_a_valid_configuration(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    (service,) = [s for s in gapwatch_services(compose).values() if s["command"] == [command]]
    env = {k: str(v) for k, v in service["environment"].items()}
    try:
        settings = load_with_env(monkeypatch, SERVICES[command], env)
    except SettingsError as exc:
        pytest.fail(f"{command} would not start with the compose environment: {exc}")
    # Reachable from the other containers, not only from inside its own.
    assert getattr(settings, HOST_FIELD[command]) == "0.0.0.0"
    assert settings.kafka_bootstrap == "kafka:9092"


def test_compose_ports_match_the_settings(compose: dict[str, Any]) -> None:
    services = compose["services"]
    ports = {}
    for name, service in gapwatch_services(compose).items():
        command = service["command"][0]
        if command not in SERVICES:
            continue
        port = effective_port(command, service["environment"])
        ports[name] = port
        published = port_mappings(service)
        assert published, f"{name}: port {port} is not published"
        for host, _, target in published:
            assert target == port, f"{name}: publishes container port {target}, serves {port}"
            assert host == "127.0.0.1", f"{name}: publish on the host's loopback only"
        url = urlsplit(service["healthcheck"]["test"][-1])
        assert url.port == port, f"{name}: the healthcheck probes {url.port}, it serves {port}"
    assert ports == {"ingest": 8081, "scorer": 8082, "alerter": 8083}

    # Clients name the ports the services listen on.
    simulator = parse_cli(services["simulator"]["command"][1:], "simulator")
    assert urlsplit(simulator.to).hostname == "ingest"
    assert urlsplit(simulator.to).port == ports["ingest"]

    kafka = services["kafka"]["environment"]
    advertised = {
        listener.split("://", 1)[1] for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    for name in ("topics", "ingest", "scorer", "alerter"):
        bootstrap = services[name]["environment"]["GAPWATCH_KAFKA_BOOTSTRAP"]
        assert bootstrap in advertised, f"{name}: {bootstrap} is not an advertised listener"

    database = urlsplit(services["alerter"]["environment"]["GAPWATCH_DATABASE_URL"])
    assert (database.hostname, database.port or 5432) == ("postgres", 5432)
    assert database.path == "/" + services["postgres"]["environment"]["POSTGRES_DB"]
    assert database.username == services["postgres"]["environment"]["POSTGRES_USER"]
    assert database.password == services["postgres"]["environment"]["POSTGRES_PASSWORD"]


def test_prometheus_scrapes_the_compose_services(compose: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target
        for job in prometheus["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    for name, service in gapwatch_services(compose).items():
        command = service["command"][0]
        if command in SERVICES:
            target = f"{name}:{effective_port(command, service['environment'])}"
            assert target in targets, f"deploy/prometheus/prometheus.yml does not scrape {target}"
    alertmanagers = {
        target
        for am in prometheus.get("alerting", {}).get("alertmanagers", [])
        for static in am.get("static_configs", [])
        for target in static["targets"]
    }
    assert alertmanagers == {"alertmanager:9093"}


def test_compose_healthchecks_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    one_shot = {n for n, s in services.items() if s.get("restart") == "no"}
    assert one_shot == {"topics", "simulator"}
    for name, service in services.items():
        if name not in one_shot:
            test = service.get("healthcheck", {}).get("test")
            assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
            assert service.get("restart") == "unless-stopped", f"{name}: not restarted"
        for dependency, spec in service.get("depends_on", {}).items():
            wanted = (
                "service_completed_successfully" if dependency in one_shot else "service_healthy"
            )
            assert spec.get("condition") == wanted, f"{name} -> {dependency}: want {wanted}"
    for name, service in gapwatch_services(compose).items():
        command = service["command"][0]
        if command in SERVICES:
            probe = service["healthcheck"]["test"]
            assert probe[1] == "gapwatch-healthcheck", f"{name}: probe with the image's checker"
            path = urlsplit(probe[2]).path
            assert serves(command, path), f"{name}: {command} does not serve {path}"
            # Readiness (dependencies answer) wherever the service offers it.
            assert path == ("/readyz" if serves(command, "/readyz") else "/healthz")
            assert {"kafka", "topics"} <= set(service["depends_on"]), name
    assert set(services["alerter"]["depends_on"]) >= {"postgres", "alertmanager"}


def test_compose_volumes(compose: dict[str, Any]) -> None:
    project: Path = compose["_project"]
    services = compose["services"]
    for name, service in services.items():
        for kind, source, read_only in mounts(service).values():
            if kind == "bind":
                relative = Path(source).relative_to(project)
                assert (ROOT / relative).exists(), f"{name}: bind mount {relative} does not exist"
                assert read_only, f"{name}: mount {relative} read-only"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
    scorer = services["scorer"]
    data_dir = scorer["environment"]["GAPWATCH_SCORER_DATA_DIR"]
    kind, source, _ = mounts(scorer)[data_dir]
    assert kind == "volume", "the scorer's state must be on a named volume"
    alerter = services["alerter"]
    rules = alerter["environment"]["GAPWATCH_ALERTER_RULES_FILE"]
    kind, source, _ = mounts(alerter)[rules]
    assert Path(source).relative_to(project) == Path("deploy/docker/alerts.yaml")


def test_compose_holds_no_secret(compose_raw: dict[str, Any], compose: dict[str, Any]) -> None:
    for name, service in compose_raw["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping, please"
        leaked = [v for v in environment if SECRET_NAME.search(v)]
        assert not leaked, f"{name}: {leaked} belong in deploy/docker/secrets/{name}.env"
    # Each service reads only its own secrets: a compromised container holds no other's.
    examples = {path.stem: read_env_file(path) for path in SECRETS_EXAMPLE.glob("*.env")}
    assert set(examples) == set(SECRETS_OF)
    for name, service in compose_raw["services"].items():
        wanted = f"deploy/docker/secrets/{name}.env" if name in SECRETS_OF else None
        assert service.get("env_file") == wanted, name
    for name, variables in SECRETS_OF.items():
        assert set(examples[name]) == variables, name
        assert all("change-me" in value for value in examples[name].values()), name
    assert examples["simulator"]["GAPWATCH_INGEST_TOKEN"] in examples["ingest"][
        "GAPWATCH_INGEST_TOKENS"
    ].split(",")
    password = examples["postgres"]["POSTGRES_PASSWORD"]
    assert f":{password}@" in examples["alerter"]["GAPWATCH_DATABASE_URL"]
    assert "secrets/" in (DOCKER_DIR / ".gitignore").read_text().split()


def test_compose_alerts_are_the_repo_alerts_but_for_alertmanager(compose: dict[str, Any]) -> None:
    compose_copy = DOCKER_DIR / "alerts.yaml"
    expected = (
        (CONFIG_DIR / "alerts.yaml").read_text().replace(LOCAL_ALERTMANAGER, COMPOSE_ALERTMANAGER)
    )
    assert alerts_copy_body(compose_copy) == expected, (
        "deploy/docker/alerts.yaml drifted from deploy/config/alerts.yaml: refresh it with the "
        "command in its header"
    )
    config = load_alerts(compose_copy, SEGMENT_LABELS)
    urls = {r.name: getattr(r, "url", None) for r in config.receivers}
    assert COMPOSE_ALERTMANAGER in urls.values()
    alertmanager = compose["services"]["alertmanager"]
    assert [target for _, _, target in port_mappings(alertmanager)] == [9093]


def datasource_uids(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        source = node.get("datasource")
        if isinstance(source, dict) and isinstance(source.get("uid"), str):
            yield source["uid"]
        for value in node.values():
            yield from datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            yield from datasource_uids(value)


def test_grafana_provisioning_matches_compose(compose: dict[str, Any]) -> None:
    project: Path = compose["_project"]
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    grafana = compose["services"]["grafana"]
    by_source = {
        Path(source).relative_to(project): target
        for target, (kind, source, _) in mounts(grafana).items()
        if kind == "bind"
    }
    assert by_source[Path("deploy/grafana/provisioning")] == "/etc/grafana/provisioning"
    dashboards_dir = by_source[Path("deploy/grafana/dashboards")]

    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (prometheus,) = datasources["datasources"]
    url = urlsplit(prometheus["url"])
    prometheus_ports = [t for _, _, t in port_mappings(compose["services"]["prometheus"])]
    assert (url.hostname, url.port) == ("prometheus", prometheus_ports[0])

    providers = yaml.safe_load((provisioning / "dashboards" / "gapwatch.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["options"]["path"] == dashboards_dir

    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent == Path(dashboards_dir)
    dashboards = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
    assert home.name in {d.name for d in dashboards}, f"no dashboard {home.name}"
    for dashboard in dashboards:
        uids = set(datasource_uids(json.loads(dashboard.read_text())))
        unknown = {u for u in uids if not u.startswith(("$", "-- "))} - {prometheus["uid"]}
        assert not unknown, f"{dashboard.name} names datasources Grafana does not have: {unknown}"


def test_compose_kafka_matches_the_local_broker(compose: dict[str, Any]) -> None:
    pom = (ROOT / "deploy" / "local" / "pom.xml").read_text()
    version = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    assert version
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{version.group(1)}"
    kafka = compose["services"]["kafka"]["environment"]
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics come from gapwatch topics"


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + "\n"
            continue
        lines.append(pending + line)
        pending = ""
    return [
        (text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text.strip() else "")
        for text in (line.strip() for line in lines)
        if text
    ]


def test_dockerfile_entry_points_exist() -> None:
    scripts = project_scripts()
    instructions = dockerfile_instructions()
    runs = " ".join(args for op, args in instructions if op == "RUN")
    checked = re.search(r"for cmd in ([^;]+);", runs)
    assert checked, "the Dockerfile must check its entry points at build time"
    commands = set(checked.group(1).split()) - {"gapwatch-healthcheck"}
    assert commands == set(scripts), "check exactly the [project.scripts] entry points"
    modules = re.search(r"for mod in ([^;]+);", runs)
    assert modules
    targets = {target.split(":")[0] for target in scripts.values()}
    assert set(modules.group(1).split()) == targets
    (cmd,) = [args for op, args in instructions if op == "CMD"]
    assert yaml.safe_load(cmd)[0] in scripts


def test_dockerfile_builds_a_non_root_slim_image() -> None:
    instructions = dockerfile_instructions()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for op, a in instructions if op == "ARG"}
    bases = [a.split()[0] for op, a in instructions if op == "FROM"]
    assert bases and all(b == "${PYTHON_IMAGE}" for b in bases)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    runs = [a for op, a in instructions if op == "RUN"]
    assert any(re.search(r"pip install \.$", r) for r in runs), "install the package: pip install ."
    users = [a for op, a in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert users[-1].split(":")[0].isdigit(), "a numeric uid, for Kubernetes' runAsNonRoot"
    copies = [shlex.split(a) for op, a in instructions if op == "COPY"]
    assert ["deploy/config", "./deploy/config"] in copies
    env = " ".join(a for op, a in instructions if op == "ENV")
    names = set(re.findall(r"(GAPWATCH_[A-Z0-9_]+)=", env))
    assert names <= known_env_names()
    assert {f"GAPWATCH_{c.split('-')[1].upper()}_HOST=0.0.0.0" for c in SERVICES} <= set(
        env.split()
    )


def dockerignored(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        glob = pattern.removeprefix("!").rstrip("/")
        # fnmatch's `*` also matches `/`, so `*/x` stands for `**/x`; `**/x` matches a top-level x.
        globs = {glob.replace("**/", "*/"), glob.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(c, g) for c in candidates for g in globs):
            excluded = not pattern.startswith("!")
    return excluded


def test_dockerignore_sends_what_the_build_copies_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for op, args in dockerfile_instructions():
        words = shlex.split(args)
        if op == "COPY" and not any(w.startswith("--from") for w in words):
            sources += [w.rstrip("/") for w in words[:-1] if not w.startswith("--")]
    assert sources
    for source in sources:
        assert not dockerignored(patterns, source), f".dockerignore leaves out {source}"
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
    for path in (".venv", ".run", ".git", "tests", "bench", "src/gapwatch/__pycache__", "x.pyc"):
        assert dockerignored(patterns, path), f".dockerignore sends {path}"


# --- Kubernetes --------------------------------------------------------------------------------


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def strategic_merge(target: Any, patch: Any) -> Any:
    """The part of Kubernetes' strategic merge the overlays use: maps merge, lists of named
    maps (containers, env, ports, volumes) merge by name, other lists are replaced."""
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            merged[key] = strategic_merge(target[key], value) if key in target else value
        return merged
    if (
        isinstance(target, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in target + patch)
    ):
        patches = {item["name"]: item for item in patch}
        kept = [
            strategic_merge(i, patches.pop(i["name"])) if i["name"] in patches else i
            for i in target
        ]
        return kept + list(patches.values())
    return patch


def pod_specs(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    template = resource.get("spec", {}).get("template")
    if template:
        yield template["spec"]


SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "labels",
    "resources",
    "images",
    "replicas",
    "patches",
    "configMapGenerator",
}


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """Render a kustomization with the features this repo uses (no name hashes on generated
    ConfigMaps; `kubectl kustomize` adds them and renames the references)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    unsupported = set(kustomization) - SUPPORTED_KEYS
    assert not unsupported, f"{folder}: teach this test's kustomize() about {unsupported}"

    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        assert path.exists(), f"{folder}: resource {entry} does not exist"
        resources += kustomize(path) if path.is_dir() else load_documents(path)

    def find(kinds: set[str], name: str) -> dict[str, Any]:
        found = [r for r in resources if r["metadata"]["name"] == name and r["kind"] in kinds]
        assert len(found) == 1, f"{folder}: no single {'/'.join(sorted(kinds))} named {name}"
        return found[0]

    for generator in kustomization.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        for file in generator.get("files", []):
            path = folder / file
            assert path.resolve().is_relative_to(folder.resolve()), f"{file}: outside {folder}"
            data[path.name] = path.read_text()
        behavior = generator.get("behavior", "create")
        if behavior == "create":
            metadata = {"name": generator["name"]}
            resources.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata})
            resources[-1]["data"] = data
        elif behavior == "merge":
            existing = find({"ConfigMap"}, generator["name"])
            existing["data"] = {**existing["data"], **data}
        else:
            assert behavior == "replace", f"{folder}: configMapGenerator behavior {behavior}"
            find({"ConfigMap"}, generator["name"])["data"] = data

    for patch_entry in kustomization.get("patches", []):
        assert set(patch_entry) == {"path"}, "only strategic-merge patches from files"
        for patch in load_documents(folder / patch_entry["path"]):
            target = find({patch["kind"]}, patch["metadata"]["name"])
            target.update(strategic_merge(target, patch))

    for entry in kustomization.get("replicas", []):
        find({"Deployment", "StatefulSet"}, entry["name"])["spec"]["replicas"] = entry["count"]

    for image in kustomization.get("images", []):
        for resource in resources:
            for spec in pod_specs(resource):
                for container in spec.get("containers", []) + spec.get("initContainers", []):
                    name, _, tag = container["image"].partition(":")
                    if name == image["name"]:
                        name = image.get("newName", name)
                        tag = image.get("newTag", tag)
                        container["image"] = f"{name}:{tag}" if tag else name

    for label_set in kustomization.get("labels", []):
        assert not label_set.get("includeSelectors"), "selectors are immutable: keep them out"
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(label_set["pairs"])
            if not label_set.get("includeTemplates"):
                continue
            spec = resource.get("spec", {})
            templates = [spec["template"]] if "template" in spec else []
            for template in templates + spec.get("volumeClaimTemplates", []):
                template.setdefault("metadata", {}).setdefault("labels", {})
                template["metadata"]["labels"].update(label_set["pairs"])

    if "namespace" in kustomization:
        for resource in resources:
            if resource["kind"] != "Namespace":
                resource["metadata"]["namespace"] = kustomization["namespace"]
    return resources


@pytest.fixture(scope="module", params=["base", "overlay"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return kustomize(K8S_BASE if request.param == "base" else K8S_OVERLAY)


def workloads(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        r["metadata"]["name"]: r
        for r in resources
        if r["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def container_env(container: dict[str, Any], resources: list[dict[str, Any]]) -> dict[str, str]:
    """The container's environment; secret references stand in as a placeholder value."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        (config_map,) = [
            r
            for r in resources
            if r["kind"] == "ConfigMap" and r["metadata"]["name"] == source["configMapRef"]["name"]
        ]
        env.update(config_map["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        elif not variable["valueFrom"].get("secretKeyRef", {}).get("optional"):
            env[variable["name"]] = "from-a-secret"
    return env


def test_k8s_manifests_validate_against_the_kubernetes_schemas(
    rendered: list[dict[str, Any]],
) -> None:
    kinds = {r["kind"] for r in rendered}
    expected = {"Deployment", "StatefulSet", "Service", "ConfigMap", "Job", "PodDisruptionBudget"}
    assert expected <= kinds
    assert "Secret" not in kinds, "no Secret with values in the manifests: reference it"
    for resource in rendered:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                name = f"{resource['kind']}/{resource['metadata']['name']}"
                pytest.fail(f"{name} is not a valid Kubernetes {version} resource: {exc}")


def test_k8s_commands_are_entry_points(rendered: list[dict[str, Any]]) -> None:
    scripts = project_scripts()
    commands = {}
    for name, workload in workloads(rendered).items():
        for spec in pod_specs(workload):
            for container in spec["containers"]:
                command = container["command"]
                assert command[0] in scripts, f"{name}: {command[0]} is not in [project.scripts]"
                if command[0] == "gapwatch":
                    parse_cli(command[1:], name)
                commands[name] = command
    assert commands == {
        "gapwatch-ingest": ["gapwatch-ingest"],
        "gapwatch-scorer": ["gapwatch-scorer"],
        "gapwatch-alerter": ["gapwatch-alerter"],
        "gapwatch-topics": ["gapwatch", "topics"],
    }


def test_k8s_gapwatch_variables_are_settings_and_secrets_are_references(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = known_env_names()
    for config_map in (r for r in rendered if r["kind"] == "ConfigMap"):
        names = {k for k in config_map["data"] if k.startswith("GAPWATCH_")}
        assert names <= known, f"ConfigMap {config_map['metadata']['name']}: {names - known}"
        leaked = {k for k in config_map["data"] if SECRET_NAME.search(k)}
        assert not leaked, f"ConfigMap {config_map['metadata']['name']} holds secrets {leaked}"
    for name, workload in workloads(rendered).items():
        for spec in pod_specs(workload):
            for container in spec["containers"]:
                for variable in container.get("env", []):
                    assert variable["name"] in known, f"{name}: no setting reads {variable['name']}"
                    if SECRET_NAME.search(variable["name"]):
                        ref = variable.get("valueFrom", {}).get("secretKeyRef")
                        assert ref and ref["name"] == "gapwatch-secrets", (
                            f"{name}: {variable['name']} must come from the Secret gapwatch-secrets"
                        )
                command = container["command"][0]
                cls = SERVICES.get(command, KafkaSettings)
                env = container_env(container, rendered)
                try:
                    load_with_env(monkeypatch, cls, env)
                except SettingsError as exc:
                    pytest.fail(f"{name} would not start: {exc}")


def test_k8s_ports_probes_and_scrape_annotations(rendered: list[dict[str, Any]]) -> None:
    services = {r["metadata"]["name"]: r for r in rendered if r["kind"] == "Service"}
    for name, workload in workloads(rendered).items():
        template = workload["spec"]["template"]
        spec = template["spec"]
        assert spec.get("enableServiceLinks") is False, f"{name}: service links clash with ports"
        assert spec["securityContext"]["runAsNonRoot"] is True
        (container,) = spec["containers"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{name}: {kind}"
        command = container["command"][0]
        if command not in SERVICES:
            continue
        env = container_env(container, rendered)
        port = effective_port(command, env)
        (http,) = [p for p in container["ports"] if p["name"] == "http"]
        assert http["containerPort"] == port, f"{name}: container port is not {port}"
        assert env[env_name(SERVICES[command], HOST_FIELD[command])] == "0.0.0.0"
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"
        assert serves(command, "/metrics")
        liveness = container["livenessProbe"]["httpGet"]
        readiness = container["readinessProbe"]["httpGet"]
        assert liveness == {"path": "/healthz", "port": "http"}, name
        wanted = "/readyz" if serves(command, "/readyz") else "/healthz"
        assert readiness == {"path": wanted, "port": "http"}, name
        assert serves(command, "/healthz")
        service = services[name]
        assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
        (service_port,) = service["spec"]["ports"]
        assert (service_port["port"], service_port["targetPort"]) == (port, "http")


def test_k8s_scorer_is_a_statefulset_within_the_partitions(
    rendered: list[dict[str, Any]],
) -> None:
    scorer = workloads(rendered)["gapwatch-scorer"]
    assert scorer["kind"] == "StatefulSet"
    (container,) = scorer["spec"]["template"]["spec"]["containers"]
    env = container_env(container, rendered)
    partitions = int(env["GAPWATCH_KAFKA_PARTITIONS"])
    assert 1 <= scorer["spec"]["replicas"] <= partitions, "scorer replicas > partitions"
    (claim,) = scorer["spec"]["volumeClaimTemplates"]
    mount_paths = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mount_paths[claim["metadata"]["name"]] == env["GAPWATCH_SCORER_DATA_DIR"]
    assert scorer["spec"]["serviceName"] in {
        r["metadata"]["name"] for r in rendered if r["kind"] == "Service"
    }


def test_k8s_config_files_are_the_repo_config(rendered: list[dict[str, Any]]) -> None:
    for file in ("policies.yaml", "alerts.yaml"):
        assert (K8S_BASE / "config" / file).read_text() == (CONFIG_DIR / file).read_text(), (
            f"deploy/k8s/base/config/{file} differs from deploy/config/{file}: "
            f"cp deploy/config/{file} deploy/k8s/base/config/"
        )
    (config_map,) = [
        r
        for r in rendered
        if r["kind"] == "ConfigMap" and r["metadata"]["name"] == "gapwatch-config"
    ]
    mounted = {"/etc/gapwatch/" + key for key in config_map["data"]}
    env = next(r for r in rendered if r["metadata"]["name"] == "gapwatch-env")["data"]
    assert env["GAPWATCH_SCORER_POLICIES_FILE"] in mounted
    assert env["GAPWATCH_ALERTER_RULES_FILE"] in mounted
    load_policies(K8S_BASE / "config" / "policies.yaml")


def test_k8s_overlay_alerts_are_the_repo_alerts_but_for_alertmanager() -> None:
    overlay_copy = K8S_OVERLAY / "config" / "alerts.yaml"
    expected = (
        (CONFIG_DIR / "alerts.yaml").read_text().replace(LOCAL_ALERTMANAGER, OVERLAY_ALERTMANAGER)
    )
    assert alerts_copy_body(overlay_copy) == expected, (
        f"{overlay_copy.relative_to(ROOT)} drifted from deploy/config/alerts.yaml: refresh it "
        "with the command in its header"
    )
    load_alerts(overlay_copy, SEGMENT_LABELS)
    (config_map,) = [
        r
        for r in kustomize(K8S_OVERLAY)
        if r["kind"] == "ConfigMap" and r["metadata"]["name"] == "gapwatch-config"
    ]
    assert config_map["data"]["alerts.yaml"] == overlay_copy.read_text()


def test_k8s_overlay_changes_namespace_image_and_replicas() -> None:
    base = {(r["kind"], r["metadata"]["name"]): r for r in kustomize(K8S_BASE)}
    overlay = {(r["kind"], r["metadata"]["name"]): r for r in kustomize(K8S_OVERLAY)}
    assert set(base) <= set(overlay)
    namespaces = {r["metadata"].get("namespace") for k, r in overlay.items() if k[0] != "Namespace"}
    assert namespaces == {"gapwatch"}
    assert ("Namespace", "gapwatch") in overlay
    images = {
        c["image"] for r in overlay.values() for spec in pod_specs(r) for c in spec["containers"]
    }
    assert images == {"registry.example.com/gapwatch:0.1.0"}
    scorer = ("StatefulSet", "gapwatch-scorer")
    assert overlay[scorer]["spec"]["replicas"] != base[scorer]["spec"]["replicas"]


def test_k8s_workloads_spread_over_nodes_and_zones_and_mount_kafka_tls(
    rendered: list[dict[str, Any]],
) -> None:
    """Issue 24: replicas spread where the cluster has room; Kafka TLS files can be mounted."""
    for name, workload in workloads(rendered).items():
        spec = workload["spec"]["template"]["spec"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["kafka-tls"]["secret"] == {
            "secretName": "gapwatch-kafka-tls",
            "optional": True,  # a cluster without TLS starts all the same
        }, name
        for container in spec["containers"]:
            mounts = {m["name"]: m for m in container["volumeMounts"]}
            assert mounts["kafka-tls"]["mountPath"] == "/etc/gapwatch-kafka-tls", name
            assert mounts["kafka-tls"]["readOnly"] is True, name
        if workload["kind"] == "Job":
            continue
        spread = spec["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        }, name
        for constraint in spread:
            selector = constraint["labelSelector"]["matchLabels"]
            assert selector.items() <= labels.items(), f"{name}: spreads other pods"
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway", name


def test_k8s_prometheus_operator_component_scrapes_the_services_and_holds_the_rules(
    rendered: list[dict[str, Any]],
) -> None:
    component = K8S_BASE.parent / "components" / "prometheus-operator"
    kustomization = yaml.safe_load((component / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    resources = [d for r in kustomization["resources"] for d in load_documents(component / r)]
    (monitor,) = [r for r in resources if r["kind"] == "ServiceMonitor"]
    (rules,) = [r for r in resources if r["kind"] == "PrometheusRule"]
    wanted = monitor["spec"]["selector"]["matchLabels"]
    services = [
        r
        for r in rendered
        if r["kind"] == "Service" and wanted.items() <= r["metadata"]["labels"].items()
    ]
    assert {s["metadata"]["name"] for s in services} == {
        "gapwatch-ingest",
        "gapwatch-scorer",
        "gapwatch-alerter",
    }
    (endpoint,) = monitor["spec"]["endpoints"]
    for service in services:
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # The PrometheusRule is the repo's rule files, unchanged (render.py writes it).
    groups = []
    for name in ("recording.yml", "alerts.yml"):
        groups += yaml.safe_load((PROMETHEUS_RULES / name).read_text())["groups"]
    assert rules["spec"]["groups"] == groups, (
        "run deploy/k8s/components/prometheus-operator/render.py"
    )
    render = runpy.run_path(str(component / "render.py"))
    assert (component / "prometheusrule.yaml").read_text() == render["rendered"](), "stale"

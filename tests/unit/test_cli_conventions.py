"""The command-line conventions users expect: --version, --help on every entry point, and
`gapwatch check` validating config files with the services' own messages (issue 24)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gapwatch_engine
import pytest

import gapwatch
from gapwatch.config import ConfigFileError, load_alerts, load_policies
from gapwatch.core.scoring import DEFAULT_SEGMENT_LABELS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POLICIES = ROOT / "deploy" / "config" / "policies.yaml"
ALERTS = ROOT / "deploy" / "config" / "alerts.yaml"


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_gapwatch_version_names_the_package_and_the_engine() -> None:
    out = run(BIN / "gapwatch", "--version")
    assert out.returncode == 0
    assert out.stdout.strip() == (
        f"gapwatch {gapwatch.__version__} (engine {gapwatch_engine.__version__})"
    )


@pytest.mark.parametrize(
    ("program", "setting"),
    [
        ("gapwatch-ingest", "GAPWATCH_INGEST_PORT"),
        ("gapwatch-scorer", "GAPWATCH_SCORER_SEGMENT_CAP"),
        ("gapwatch-alerter", "GAPWATCH_ALERTER_RULES_FILE"),
    ],
)
def test_service_help_prints_its_settings_instead_of_starting(program: str, setting: str) -> None:
    # With no broker reachable, a service that started would not exit 0 within the timeout.
    out = run(BIN / program, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: {program}")
    assert f"  {setting}  [default: " in out.stdout
    assert run(BIN / program, "--version").stdout.startswith(f"{program} {gapwatch.__version__}")


def test_check_passes_the_shipped_files() -> None:
    out = run(BIN / "gapwatch", "check", POLICIES, ALERTS)
    assert out.returncode == 0, out.stderr
    assert f"{POLICIES}: ok" in out.stdout and f"{ALERTS}: ok" in out.stdout


def test_check_fails_with_the_services_own_messages(tmp_path: Path) -> None:
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICIES.read_text().replace("within: 15m", "within: soon", 1))
    alerts = tmp_path / "alerts.yaml"
    alerts.write_text(ALERTS.read_text().replace("group_by: [team]", "group_by: [squad]", 1))
    out = run(BIN / "gapwatch", "check", policies, alerts)
    assert out.returncode == 1
    expected = []
    for load in (
        lambda: load_policies(policies),
        lambda: load_alerts(alerts, DEFAULT_SEGMENT_LABELS),
    ):
        with pytest.raises(ConfigFileError) as caught:
            load()
        expected.append(f"gapwatch: {caught.value}")
    assert out.stderr.splitlines() == expected


def test_check_names_an_unreadable_file(tmp_path: Path) -> None:
    out = run(BIN / "gapwatch", "check", tmp_path / "missing.yaml", ALERTS)
    assert out.returncode == 1
    assert "missing.yaml: cannot read" in out.stderr

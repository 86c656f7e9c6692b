"""`gapwatch demo --minutes`: the whole stack runs, the slipping team is paged, all stops."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from gapwatch.demo import PORTS
from tests.integration.conftest import REPO

pytestmark = pytest.mark.timeout(420)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_demo_pages_the_slipping_team_once_resolves_and_stops_everything() -> None:
    busy = [port for port in PORTS.values() if listening(port)]
    if busy:
        pytest.fail(f"ports {busy} are in use; the demo needs them")
    done = subprocess.run(
        [sys.executable, "-m", "gapwatch", "demo", "--minutes", "3.2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "alert first-response-burn (team=billing): fired 1x, resolved 1x" in out, out[-4000:]
    assert "(team=network)" not in out and "(team=onboarding)" not in out, out[-4000:]
    assert [port for port in PORTS.values() if listening(port)] == [], "the demo left a process"

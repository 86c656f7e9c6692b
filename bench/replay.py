"""Replay benchmark: events/s and peak memory (RSS) of `gapwatch replay` on a simulated stream.

Simulates `--events` team-slip events into a file (`gapwatch simulate --scenario team-slip
--rate 1000 --speed 2880`: about a month of simulated time per million events, ending two days
ago, so nothing is from the future), then runs `gapwatch replay` on it
as a child process and prints input events per wall-clock second and the child's peak RSS.
Gap events go to a file beside the input (JSON Lines), the summary to another; both are
deleted with the input unless --keep names a directory.

    .venv/bin/python -m bench.replay [--events 1000000] [--sort] [--keep DIR]
    .venv/bin/python -m bench.replay --file EVENTS.jsonl --until 2026-10-10T00:00:00+00:00
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from gapwatch.simulate import build_simulator

RATE = 1000.0  # simulated events per simulator wall second: the file's events = RATE * seconds
SPEED = 2880.0  # simulated seconds per simulator wall second: 1M events span ~33 days


def simulate(path: Path, events: int) -> datetime:
    """Write about `events` events to `path`, as `gapwatch simulate --to file:` with the
    team-slip scenario would; returns the --until that covers them. Written a simulated day
    at a time: the simulator holds the events of one `events_until` call in memory, and
    `gapwatch simulate` asks for all of them at once."""
    seconds = events / RATE
    span = timedelta(seconds=seconds * SPEED)
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    start = end - span
    options = argparse.Namespace(
        scenario="team-slip",
        slip_team="billing",
        slip_start=10.0,
        slip_end=30.0,
        speed=SPEED,
        rate=RATE,
        seed=1,
    )
    simulator = build_simulator(options, start)
    count = 0
    with path.open("wb") as out:
        step = start
        while step < end:
            step = min(step + timedelta(days=1), end)
            for event in simulator.events_until(step):
                out.write(orjson.dumps(event) + b"\n")
                count += 1
    print(f"simulated {count} events from {start.isoformat()} to {end.isoformat()}", flush=True)
    return end + timedelta(days=1)


def _gapwatch() -> list[str]:
    return [sys.executable, "-m", "gapwatch"]


def run(path: Path, until: datetime, out: Path, sort: bool) -> None:
    lines = sum(1 for line in path.open("rb") if line.strip())
    command = [
        *_gapwatch(),
        "replay",
        str(path),
        "--until",
        until.isoformat(),
        "-o",
        str(out / "gaps.jsonl"),
        "--summary",
        str(out / "summary.json"),
        "-q",
        *(["--sort", "--sort-dir", str(out)] if sort else []),
    ]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    gaps = sum(1 for _ in (out / "gaps.jsonl").open("rb"))
    print(
        f"replay{' --sort' if sort else ''}: {lines} events in {elapsed:.1f} s = "
        f"{lines / elapsed:,.0f} events/s; {gaps} gap events; "
        f"peak RSS {usage.ru_maxrss / 1024:,.0f} MiB; exit {child.returncode}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--file", type=Path, help="replay this file instead of simulating one")
    parser.add_argument("--until", help="with --file: its --until (ISO 8601 with an offset)")
    parser.add_argument("--sort", action="store_true", help="replay with --sort")
    parser.add_argument("--keep", type=Path, help="keep input and output in this directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as scratch:
        out = args.keep or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        if args.file:
            if not args.until:
                parser.error("--file needs --until")
            path, until = args.file, datetime.fromisoformat(args.until)
        else:
            path = out / "events.jsonl"
            until = simulate(path, args.events)
        run(path, until, out, args.sort)


if __name__ == "__main__":
    main()

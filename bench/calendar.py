"""Business-calendar arithmetic: the compiled engine against the Python reference, in process.

    .venv/bin/python -m bench.calendar [--calls 20000]

For each calendar of deploy/config/policies.yaml (Amsterdam and New York business hours with
country holidays) and one with a lunch break, times the questions the scorer asks per promise
(`add_business_seconds` for a due time, `business_seconds_between` for a gap, `is_open`) over
starts spread across 2026, on `BusinessCalendar` (the engine) and `ReferenceCalendar` (Python),
each warmed first so both answer from their day caches. Prints µs a call and the ratio.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from bench.common import REPO
from gapwatch.core.calendar import BusinessCalendar, CalendarSpec, ReferenceCalendar

LUNCH = {
    "name": "lunch-break",
    "timezone": "Europe/Amsterdam",
    "hours": {d: [["09:00", "12:00"], ["13:00", "17:30"]] for d in ("mon", "tue", "wed", "thu")},
    "holidays": {"countries": [{"country": "DE", "subdiv": "BY"}]},
}


def per_call(run: Callable[[], Any], calls: int) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    rng = random.Random(21)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    starts = [base + timedelta(seconds=rng.randrange(365 * 86_400)) for _ in range(args.calls)]
    ends = [s + timedelta(seconds=rng.randrange(3 * 86_400)) for s in starts]
    docs = [
        *yaml.safe_load((REPO / "deploy" / "config" / "policies.yaml").read_text())["calendars"],
        LUNCH,
    ]
    print(f"{'calendar':<16} {'question':<26} {'python µs':>10} {'engine µs':>10} {'ratio':>7}")
    for doc in docs:
        spec = CalendarSpec.model_validate(doc)
        engine, reference = BusinessCalendar(spec), ReferenceCalendar(spec)
        questions: dict[str, Callable[[Any], Callable[[], Any]]] = {
            "add_business_seconds(4h)": lambda c: (
                lambda: [c.add_business_seconds(s, 14_400.0) for s in starts]
            ),
            "business_seconds_between": lambda c: (
                lambda: [
                    c.business_seconds_between(s, e) for s, e in zip(starts, ends, strict=True)
                ]
            ),
            "is_open": lambda c: lambda: [c.is_open(s) for s in starts],
        }
        for name, make in questions.items():
            make(engine)()
            make(reference)()  # warm: both answer from their caches
            python = per_call(make(reference), args.calls)
            compiled = per_call(make(engine), args.calls)
            print(
                f"{spec.name:<16} {name:<26} {python:>10.2f} {compiled:>10.2f} "
                f"{python / compiled:>6.1f}x"
            )


if __name__ == "__main__":
    main()

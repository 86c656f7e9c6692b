"""`gapwatch replay`: re-scores a file of events, streaming gap events out and figures to a summary.

Gap events go out as JSON Lines as they are produced; nothing of them is kept. What is kept is
bounded by segments x promise kinds x periods (the totals), the items' clocks, and the first
`LISTED_REJECTIONS` rejected lines (every one goes to `--rejects`).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from gapwatch.config import load_policies
from gapwatch.core.clock import ClockConfig
from gapwatch.core.gaps import GapEvent
from gapwatch.core.scoring import (
    LateEvent,
    Rejected,
    Scoring,
    ScoringConfig,
    numbered,
    replay_stream,
)
from gapwatch.core.timebound import not_after
from gapwatch.core.totals import Period, Totals
from gapwatch.eventsort import SortedLines

DEFAULT_POLICIES = Path(__file__).resolve().parents[2] / "deploy" / "config" / "policies.yaml"
"""The repository's policies, found from this package's location (a source checkout or an
editable install), so the default does not depend on the current directory."""

LISTED_REJECTIONS = 1000
"""Rejected lines the summary lists in full; `--rejects` gets every one."""

REST_AFTER = timedelta(days=1)
"""A clock idle this long (event time) rests as saved bytes, as in the scorer's state store."""

SORT_HINT = "the file is not in event-time order: replay it with --sort"
_PROGRESS_STEP = 1 << 20  # bytes between progress bar updates: an update costs microseconds
_SERIALIZE = GapEvent.__pydantic_serializer__.to_json


def run_replay(args: argparse.Namespace) -> int:
    policies = load_policies(args.policies)
    config = ScoringConfig(
        ClockConfig.from_policies(policies),
        segment_labels=tuple(args.segment_labels.split(",")),
        grace_seconds=args.grace_seconds,
    )
    if not args.file.is_file():
        sys.stderr.write(f"gapwatch: {args.file}: no such file\n")
        return 2
    # History is bounded by `--until` (or, without it, by now) plus the skew: a replay of
    # last quarter refuses an event from next year, as the live scorer would have.
    until: datetime | None = args.until
    limit = not_after(until or datetime.now(UTC), args.max_future_skew_seconds)
    scoring = Scoring(config)
    assert scoring.keyer is not None
    totals = Totals(scoring.keyer, Period(args.period), on_time_share=config.on_time_share)
    rejected: Counter[str] = Counter()
    listed: list[dict[str, Any]] = []
    size = args.file.stat().st_size
    gap_count = 0
    sort_runs = 0
    bar = Progress(
        TextColumn("[bold]{task.description}[/]"),
        BarColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=args.quiet,
    )
    with ExitStack() as stack:
        gaps = _open_out(args.output, stack)
        rejects = stack.enter_context(args.rejects.open("wb")) if args.rejects else None
        source = stack.enter_context(args.file.open("rb"))
        stack.enter_context(bar)
        lines: Iterable[tuple[int, bytes]]
        if args.sort:
            sort_task = bar.add_task("sort", total=size)
            sorter = stack.enter_context(
                SortedLines(
                    source,
                    memory_bytes=args.sort_memory_mb * 1024 * 1024,
                    temp_dir=args.sort_dir,
                    on_read=lambda n: bar.advance(sort_task, n),
                )
            )
            lines = sorter
        else:
            lines = numbered(source)
        replay_task = bar.add_task("replay", total=size)
        counted = _counting(lines, lambda n: bar.advance(replay_task, n))
        write, observe = gaps.write, totals.observe
        # The final windows (as of --until) need only the last 7 days' gap events, plus the
        # 2-hour bucket the 7d window's edge falls in and the grace period of late corrections.
        lead = timedelta(days=7, hours=3, seconds=config.grace_seconds)
        windows_from = None if until is None else until - lead
        stream = replay_stream(
            counted,
            scoring,
            until,
            limit,
            REST_AFTER,
            advance_windows=True,
            windows_from=windows_from,
        )
        for out in stream:
            if type(out) is GapEvent:
                write(_SERIALIZE(out, exclude_none=True) + b"\n")
                observe(out.data)
                gap_count += 1
                continue
            assert isinstance(out, Rejected)
            rejected[out.reason] += 1
            entry = _rejection(out, hint=not args.sort)
            if len(listed) < LISTED_REJECTIONS:
                listed.append(entry)
            if rejects is not None:
                raw = out.raw.decode("utf-8", "replace").rstrip("\n")
                rejects.write(orjson.dumps(entry | {"raw": raw}) + b"\n")
        bar.update(replay_task, completed=size)
        if args.sort:
            sort_runs = sorter.runs
    as_of = until or scoring.watermark or datetime.now(UTC)
    rejected_total = sum(rejected.values())
    summary = {
        "input": str(args.file),
        "policies": {"file": str(args.policies), "version": policies.version},
        "until": None if until is None else until.isoformat(),
        "sorted": bool(args.sort),
        "sort_runs": sort_runs,
        "gap_events": gap_count,
        "items": len(scoring.items),
        "totals": totals.as_dict(),
        "final": scoring.snapshot(as_of).as_dict(),
        "feedback": {"waiting": scoring.feedback_waiting(), "unjoined": dict(scoring.unjoined)},
        "before_opened": scoring.before_opened,
        "unknown_sla_policy": scoring.unknown_policies,
        "rejected": {
            "lines": rejected_total,
            "by_reason": dict(rejected.most_common()),
            "listed": listed,
            "listed_limit": LISTED_REJECTIONS,
        },
    }
    if args.summary:
        args.summary.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stderr.write(
        f"replayed {args.file}: {gap_count} gap events, {len(scoring.items)} items, "
        f"{rejected_total} rejected lines"
        + (f" (sorted in {sort_runs} runs)" if args.sort else "")
        + "\n"
    )
    if rejected:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in rejected.most_common())
        where = f"; details in {args.rejects}" if args.rejects else ""
        if not args.rejects and args.summary:
            where = f"; the first {LISTED_REJECTIONS} in {args.summary}"
        sys.stderr.write(f"rejected {rejected_total} lines ({reasons}){where}\n")
        if rejected[LateEvent.reason] and not args.sort:
            sys.stderr.write(f"{rejected[LateEvent.reason]} lines too late: {SORT_HINT}\n")
        return 1
    return 0


def _open_out(path: Path | None, stack: ExitStack) -> IO[bytes]:
    if path is None or str(path) == "-":
        return sys.stdout.buffer
    return stack.enter_context(path.open("wb", buffering=1 << 20))


def _counting(
    lines: Iterable[tuple[int, bytes]], advance: Callable[[int], None]
) -> Iterator[tuple[int, bytes]]:
    """`lines`, calling `advance` with the bytes passed every megabyte or so."""
    pending = 0
    for item in lines:
        pending += len(item[1])
        if pending >= _PROGRESS_STEP:
            advance(pending)
            pending = 0
        yield item
    advance(pending)


def _rejection(out: Rejected, *, hint: bool) -> dict[str, Any]:
    entry = out.as_dict()
    if hint and out.reason == LateEvent.reason:
        entry["detail"] = f"{out.detail} ({SORT_HINT})"
    return entry

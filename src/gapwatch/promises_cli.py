"""`gapwatch promises`: the promises behind the alerts, from the alerter's API (never Kafka)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import httpx
import orjson

from gapwatch.core.durations import short_duration

DEFAULT_URL = "http://127.0.0.1:8083"
COLUMNS = ("item_id", "promise_kind", "state", "due_at", "late / left", "team", "region")


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "promises",
        help="list promises from the alerter's view (overdue first), e.g. --team billing",
        description="Lists the promises the alerter's /v1/promises view holds, most overdue "
        "first. It talks only to the alerter's HTTP API (GAPWATCH_ALERTER_URL), never to Kafka.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("GAPWATCH_ALERTER_URL", DEFAULT_URL),
        help="the alerter's base URL (default: $GAPWATCH_ALERTER_URL or %(default)s)",
    )
    for label in ("team", "region", "priority"):
        parser.add_argument(f"--{label}", help=f"only promises whose {label} is this")
    parser.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="any segment label"
    )
    parser.add_argument(
        "--state",
        action="append",
        default=[],
        help="open, at_risk, overdue, paused, closed (repeatable; default: all but closed)",
    )
    parser.add_argument("--kind", action="append", default=[], help="promise kind (repeatable)")
    parser.add_argument("--sort", default="-overdue_by", help="%(default)s, time_left, due_at, ...")
    parser.add_argument("--limit", type=int, default=50, help="most rows (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead")
    parser.set_defaults(func=cmd_promises)


def cmd_promises(args: argparse.Namespace) -> int:
    params: list[tuple[str, str]] = []
    for label in ("team", "region", "priority"):
        value = getattr(args, label)
        if value:
            params.append((label, value))
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            sys.stderr.write(f"gapwatch promises: --label {item!r}: expected KEY=VALUE\n")
            return 2
        params.append((key, value))
    states = args.state or ["open", "at_risk", "overdue", "paused"]
    params += [("state", s) for s in states] + [("kind", k) for k in args.kind]
    params += [("sort", args.sort)]
    rows: list[dict[str, Any]] = []
    cursor = None
    try:
        with httpx.Client(base_url=args.url.rstrip("/"), timeout=30) as client:
            while len(rows) < args.limit:
                page = [*params, ("limit", str(min(500, args.limit - len(rows))))]
                if cursor:
                    page.append(("cursor", cursor))
                response = client.get("/v1/promises", params=page)
                if response.status_code != 200:
                    sys.stderr.write(
                        f"gapwatch promises: the alerter answered {response.status_code}: "
                        f"{response.text[:500]}\n"
                    )
                    return 1
                body = response.json()
                rows.extend(body["promises"])
                cursor = body.get("next_cursor")
                if not cursor:
                    break
    except httpx.HTTPError as exc:
        sys.stderr.write(f"gapwatch promises: cannot reach the alerter at {args.url}: {exc}\n")
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps({"promises": rows}, option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return 0
    sys.stdout.write(render_table(rows))
    return 0


def render_table(rows: list[dict[str, Any]]) -> str:
    """Plain aligned columns: pipes and greps well, and reads in any terminal."""
    table = [COLUMNS] + [_row(r) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table]
    lines.append(f"{len(rows)} promises")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _row(record: dict[str, Any]) -> tuple[str, ...]:
    over = record.get("overdue_by_seconds")
    left = record.get("time_left_seconds")
    if over is not None:
        when = f"{short_duration(over)} late"
    elif left is not None:
        when = f"{short_duration(left)} left"
    else:
        when = record.get("outcome") or ""
    segment = record.get("segment", {})
    return (
        record["item_id"],
        record["promise_kind"],
        record["state"],
        record["due_at"],
        when,
        segment.get("team", ""),
        segment.get("region", ""),
    )

"""The `gapwatch` command line: schemas, topics, bulk ingest, replay and the simulator."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gapwatch.config import DEFAULT_ALERTS, DEFAULT_POLICIES
from gapwatch.core.schemas import event_schemas
from gapwatch.core.timebound import DEFAULT_MAX_FUTURE_SKEW_SECONDS
from gapwatch.settings import version

DEFAULT_SCHEMA_DIR = Path("schemas")


def _aware_time(text: str) -> datetime:
    """An argparse type: an ISO 8601 time with a UTC offset, or a usage error (exit 2)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time; expected e.g. 2026-03-31T00:00:00+00:00"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no UTC offset; expected e.g. 2026-03-31T00:00:00+00:00"
        )
    return value.astimezone(UTC)


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1, or a usage error (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def api_documents() -> dict[str, Any]:
    """The OpenAPI documents of the ingest and alerter APIs, as the services serve them with
    their default settings (`openapi/ingest.json`, `openapi/alerter.json`)."""
    from prometheus_client import CollectorRegistry

    from gapwatch.config import load_alerts
    from gapwatch_alerter.app import create_app as alerter_app
    from gapwatch_alerter.settings import AlerterSettings
    from gapwatch_ingest.app import create_app as ingest_app
    from gapwatch_ingest.settings import IngestSettings

    # model_construct: the defaults, whatever this shell's GAPWATCH_* variables say.
    ingest = ingest_app(IngestSettings.model_construct(), CollectorRegistry())
    alerter = alerter_app(
        AlerterSettings.model_construct(), load_alerts(DEFAULT_ALERTS), CollectorRegistry(), env={}
    )
    return {"openapi/ingest.json": ingest.openapi(), "openapi/alerter.json": alerter.openapi()}


def generated_documents() -> dict[str, Any]:
    """Every published document: the event schemas and examples, and the OpenAPI documents."""
    return {**event_schemas(), **api_documents()}


def stale_schema_files(directory: Path) -> list[str]:
    """Files under `directory` that differ from what the models generate (or are missing/extra)."""
    wanted = {name: _render(doc) for name, doc in generated_documents().items()}
    stale = [
        n
        for n, text in wanted.items()
        if not (directory / n).is_file() or (directory / n).read_text() != text
    ]
    present = {str(p.relative_to(directory)) for p in directory.rglob("*.json")}
    stale.extend(sorted(present - set(wanted)))
    return sorted(stale)


def cmd_schemas(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    if args.check:
        stale = stale_schema_files(directory)
        if stale:
            print(
                f"stale schema files in {directory} (run `gapwatch schemas`):", *stale, sep="\n  "
            )
            return 1
        print(f"schemas in {directory} are up to date")
        return 0
    documents = generated_documents()
    for name, doc in documents.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_render(doc))
    for extra in stale_schema_files(directory):
        (directory / extra).unlink(missing_ok=True)
    print(f"wrote {len(documents)} files to {directory}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the policies and alert rules files as the scorer and the alerter load them, with
    their messages: 0 if both are valid, 1 if not."""
    import os

    from gapwatch.config import ConfigFileError, load_alerts, load_policies
    from gapwatch.core.calendar import CalendarError
    from gapwatch.core.clock import ClockConfig
    from gapwatch.core.scoring import DEFAULT_SEGMENT_LABELS

    labels_env = os.environ.get("GAPWATCH_SCORER_SEGMENT_LABELS", "")
    labels = tuple(label.strip() for label in labels_env.split(",") if label.strip())
    failed = False
    try:
        policies = load_policies(args.policies)
        ClockConfig.from_policies(policies)
        print(
            f"{args.policies}: ok ({len(policies.policies)} policies, "
            f"{len(policies.calendars)} calendars, version {policies.version})"
        )
    except (ConfigFileError, CalendarError) as exc:
        sys.stderr.write(f"gapwatch: {exc}\n")
        failed = True
    try:
        alerts = load_alerts(args.alerts, labels or DEFAULT_SEGMENT_LABELS)
        print(
            f"{args.alerts}: ok ({len(alerts.rules)} rules, {len(alerts.receivers)} receivers; "
            f"segment labels {','.join(labels or DEFAULT_SEGMENT_LABELS)})"
        )
    except ConfigFileError as exc:
        sys.stderr.write(f"gapwatch: {exc}\n")
        failed = True
    return 1 if failed else 0


def cmd_topics(_: argparse.Namespace) -> int:
    from gapwatch.kafka.settings import KafkaSettings
    from gapwatch.kafka.topics import ensure_topics
    from gapwatch.settings import load_settings

    settings = load_settings(KafkaSettings)
    counts = asyncio.run(ensure_topics(settings))
    for topic, partitions in sorted(counts.items()):
        print(f"{topic}\t{partitions} partitions")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from gapwatch.bulk import bulk_ingest
    from gapwatch.kafka.settings import KafkaSettings
    from gapwatch.settings import TimeBoundSettings, load_settings

    settings = load_settings(KafkaSettings)
    skew = load_settings(TimeBoundSettings).max_future_skew_seconds
    report = asyncio.run(
        bulk_ingest(
            settings,
            args.file,
            args.rejects,
            progress=not args.quiet,
            max_future_skew_seconds=skew,
        )
    )
    print(f"accepted {report.accepted} events from {args.file}")
    if report.rejected:
        reasons = ", ".join(f"{r}: {n}" for r, n in Counter(report.rejected).most_common())
        print(
            f"rejected {sum(report.rejected.values())} lines ({reasons})"
            + (f"; details in {args.rejects}" if args.rejects else "")
        )
        return 1
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from gapwatch.replay_cli import run_replay

    return run_replay(args)


def cmd_simulate(args: argparse.Namespace) -> int:
    from gapwatch.simulate import run_simulation

    return run_simulation(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gapwatch", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"gapwatch {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser(
        "check",
        help="validate the policies and alert rules files, as the services load them (exit 0/1)",
    )
    check.add_argument(
        "policies", type=Path, nargs="?", default=DEFAULT_POLICIES, help="SLA policies YAML"
    )
    check.add_argument("alerts", type=Path, nargs="?", default=DEFAULT_ALERTS, help="alerts YAML")
    check.set_defaults(func=cmd_check)

    schemas = sub.add_parser("schemas", help="write (or --check) the JSON Schemas under schemas/")
    schemas.add_argument("--dir", type=Path, default=DEFAULT_SCHEMA_DIR)
    schemas.add_argument("--check", action="store_true", help="fail if the files are stale")
    schemas.set_defaults(func=cmd_schemas)

    topics = sub.add_parser("topics", help="create gapwatch's Kafka topics (idempotent)")
    topics.set_defaults(func=cmd_topics)

    ingest = sub.add_parser("ingest", help="bulk-load a JSON Lines file of events into Kafka")
    ingest.add_argument("file", type=Path)
    ingest.add_argument("--rejects", type=Path, help="write rejected lines and reasons here")
    ingest.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ingest.set_defaults(func=cmd_ingest)

    _replay_parser(sub)

    sim = sub.add_parser("simulate", help="produce a realistic event stream (file, ingest, Kafka)")
    sim.add_argument("--scenario", choices=["steady", "team-slip"], default="steady")
    sim.add_argument(
        "--to",
        required=True,
        help="file:PATH (as fast as possible), kafka, or http://HOST:PORT (ingest)",
    )
    sim.add_argument("--rate", type=float, default=100.0, help="events per wall-clock second")
    sim.add_argument("--minutes", type=float, default=5.0, help="wall-clock minutes to run")
    sim.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="simulated seconds per wall-clock second (60: an hour a minute)",
    )
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--start", help="simulated start time (ISO); default now")
    sim.add_argument("--slip-team", default="billing")
    sim.add_argument(
        "--slip-start",
        type=float,
        default=10.0,
        help="team-slip: wall-clock minute the slip starts",
    )
    sim.add_argument(
        "--slip-end", type=float, default=30.0, help="team-slip: wall-clock minute it recovers"
    )
    sim.set_defaults(func=cmd_simulate)

    demo = sub.add_parser(
        "demo", help="run the whole stack with a live view of a team slipping (needs make infra)"
    )
    demo.add_argument(
        "--minutes", type=float, default=None, help="stop after this long and print a summary"
    )
    demo.add_argument("--rate", type=float, default=300.0, help="simulated events per second")
    demo.set_defaults(func=cmd_demo)

    # Sources are looked up when the command runs: building the parser imports no importer.
    imp = sub.add_parser("import", help="map another system's export to gapwatch events")
    imp.add_argument("source", help="the system that wrote the export: servicenow")
    imp.add_argument("file", type=Path, help="the export: a .csv, or a .zip holding one")
    where = imp.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", type=Path, help="write JSON Lines here")
    where.add_argument("--to", help="kafka, or http://HOST:PORT (the ingest API)")
    _import_options(imp)
    imp.add_argument("--batch", type=int, default=500, help="events per ingest API request")
    imp.set_defaults(func=cmd_import)

    from gapwatch.promises_cli import add_parser as add_promises

    add_promises(sub)
    report = sub.add_parser("report", help="gapwatch's SLA verdicts beside the source's own")
    report.add_argument("source", choices=["servicenow"])
    report.add_argument("file", type=Path, help="the incident event log (.csv or .zip)")
    _import_options(report)
    report.set_defaults(func=cmd_report)
    return parser


def _replay_parser(sub: Any) -> None:
    from gapwatch.replay_cli import DEFAULT_POLICIES, LISTED_REJECTIONS

    rep = sub.add_parser(
        "replay",
        help="re-score a JSON Lines file of events with the scoring core, no Kafka",
        description="Runs the scoring core over a JSON Lines file of input events, exactly as "
        "the live scorer would: gap events stream out as JSON Lines; --summary gets totals per "
        "segment x promise kind (whole input and per period), the final windows, open counts "
        "and rejections. Exit 0; 1 if any line was rejected (the valid ones are scored either "
        "way); 2 on bad arguments or configuration.",
    )
    rep.add_argument("file", type=Path)
    rep.add_argument(
        "--policies",
        type=Path,
        default=DEFAULT_POLICIES,
        help="SLA policies and calendars (default: the repository's, %(default)s)",
    )
    rep.add_argument("--segment-labels", default="team,region,priority", help="default %(default)s")
    rep.add_argument(
        "--grace-seconds",
        type=float,
        default=3600.0,
        help="how far behind its stream's newest event time an event may lie (default "
        "%(default)s); later ones are rejected as too_late",
    )
    rep.add_argument(
        "--until",
        type=_aware_time,
        help="advance the clock to this time at the end (ISO 8601 with a UTC offset); events "
        "after it plus --max-future-skew-seconds are rejected",
    )
    rep.add_argument(
        "--max-future-skew-seconds",
        type=float,
        default=DEFAULT_MAX_FUTURE_SKEW_SECONDS,
        help="how far past --until (or now) an event's own time may lie (default %(default)s)",
    )
    rep.add_argument(
        "-o",
        "--gaps",
        "--output",
        dest="output",
        type=Path,
        metavar="FILE",
        help="write the gap events here, as JSON Lines (default stdout)",
    )
    rep.add_argument(
        "--summary",
        type=Path,
        metavar="FILE",
        help="write the summary JSON here: totals, final windows, open counts, rejections",
    )
    rep.add_argument(
        "--period",
        choices=["month", "week"],
        default="month",
        help="the totals' period, UTC calendar months or ISO weeks (default %(default)s)",
    )
    rep.add_argument(
        "--rejects",
        type=Path,
        metavar="FILE",
        help=f"write every rejected line with all its errors here (the summary lists the "
        f"first {LISTED_REJECTIONS})",
    )
    rep.add_argument(
        "--sort",
        action="store_true",
        help="replay in event-time order (for exports grouped by item); sorts on disk when "
        "the file does not fit in --sort-memory-mb",
    )
    rep.add_argument(
        "--sort-memory-mb",
        type=_positive_int,
        default=256,
        help="memory for sorting (default %(default)s)",
    )
    rep.add_argument(
        "--sort-dir", type=Path, help="where sorted runs go (default: the system's temp dir)"
    )
    rep.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    rep.set_defaults(func=cmd_replay)


def _import_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timezone", default="UTC", help="zone of the export's naive timestamps (default UTC)"
    )
    parser.add_argument(
        "--policies",
        type=Path,
        help="SLA policies (default: the source's, e.g. deploy/config/servicenow-policies.yaml)",
    )
    parser.add_argument("--limit", type=int, help="only the first N items (incidents)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _import_setup(args: argparse.Namespace) -> tuple[Any, Any]:
    """(source module, ImportOptions) from the import/report arguments; SystemExit(2) if bad."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from gapwatch.config import load_policies
    from gapwatch.importers import ImportOptions, UnknownSource, get_source

    try:
        source = get_source(args.source)
    except UnknownSource as exc:
        sys.stderr.write(f"gapwatch: {exc}\n")
        raise SystemExit(2) from None
    try:
        zone = UTC if args.timezone.upper() == "UTC" else ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        sys.stderr.write(f"gapwatch: --timezone {args.timezone!r}: not a known IANA zone\n")
        raise SystemExit(2) from None
    if args.limit is not None and args.limit < 1:
        sys.stderr.write("gapwatch: --limit must be at least 1\n")
        raise SystemExit(2)
    policies = load_policies(args.policies or source.DEFAULT_POLICIES)
    return source, ImportOptions(timezone=zone, policies=policies, limit=args.limit)


def cmd_import(args: argparse.Namespace) -> int:
    from gapwatch.importers import SourceFormatError
    from gapwatch.importers.pipeline import run_import
    from gapwatch.importers.sinks import send_http, send_kafka, write_jsonl

    source, options = _import_setup(args)
    try:
        result = run_import(source, args.file, options, progress=not args.quiet)
    except SourceFormatError as exc:
        sys.stderr.write(f"gapwatch: {exc}\n")
        return 2
    for line in result.stats.summary():
        sys.stderr.write(line + "\n")
    events = result.events
    if args.output:
        write_jsonl(events, args.output)
        sys.stderr.write(f"wrote {len(events)} events to {args.output}\n")
    elif args.to == "kafka":
        accepted, rejected = send_kafka(events, progress=not args.quiet)
        sys.stderr.write(f"produced {accepted} events to Kafka\n")
        if rejected:
            sys.stderr.write(f"Kafka bulk load rejected {rejected}\n")
            return 1
    elif args.to.startswith(("http://", "https://")):
        try:
            sent = send_http(events, args.to, batch=args.batch, progress=not args.quiet)
        except RuntimeError as exc:
            sys.stderr.write(f"gapwatch: {exc}\n")
            return 1
        sys.stderr.write(f"sent {sent} events to {args.to}\n")
    else:
        sys.stderr.write(f"gapwatch: --to {args.to!r}: expected kafka or http://HOST:PORT\n")
        return 2
    return 1 if result.stats.invalid else 0


def cmd_report(args: argparse.Namespace) -> int:
    from gapwatch.importers import SourceFormatError
    from gapwatch.report import render, servicenow_report

    _, options = _import_setup(args)
    try:
        report = servicenow_report(args.file, options, progress=not args.quiet)
    except SourceFormatError as exc:
        sys.stderr.write(f"gapwatch: {exc}\n")
        return 2
    sys.stdout.write(render(report))
    return 1 if report.stats.invalid else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gapwatch.demo import run_demo

    try:
        return run_demo(args.minutes, args.rate)
    except RuntimeError as exc:
        sys.stderr.write(f"gapwatch demo: {exc}\n")
        return 1


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s %(message)s",
    )
    from gapwatch.config import ConfigFileError
    from gapwatch.settings import SettingsError

    try:
        code = args.func(args)
    except SettingsError as exc:
        sys.stderr.write(f"gapwatch: {exc}\n")
        code = 2
    except ConfigFileError as exc:
        sys.stderr.write(f"gapwatch: {exc}\n")
        code = 2
    raise SystemExit(code)

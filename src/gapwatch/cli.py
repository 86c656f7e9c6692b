"""The `gapwatch` command line: schemas, topics and bulk ingest (more subcommands grow here)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from gapwatch.core.schemas import event_schemas

DEFAULT_SCHEMA_DIR = Path("schemas")


def _render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def stale_schema_files(directory: Path) -> list[str]:
    """Files under `directory` that differ from what the models generate (or are missing/extra)."""
    wanted = {name: _render(doc) for name, doc in event_schemas().items()}
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
    for name, doc in event_schemas().items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_render(doc))
    for extra in stale_schema_files(directory):
        (directory / extra).unlink(missing_ok=True)
    print(f"wrote {len(event_schemas())} files to {directory}")
    return 0


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
    from gapwatch.settings import load_settings

    settings = load_settings(KafkaSettings)
    report = asyncio.run(bulk_ingest(settings, args.file, args.rejects, progress=not args.quiet))
    print(f"accepted {report.accepted} events from {args.file}")
    if report.rejected:
        reasons = ", ".join(f"{r}: {n}" for r, n in Counter(report.rejected).most_common())
        print(
            f"rejected {sum(report.rejected.values())} lines ({reasons})"
            + (f"; details in {args.rejects}" if args.rejects else "")
        )
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gapwatch", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

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
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s %(message)s",
    )
    from gapwatch.settings import SettingsError

    try:
        code = args.func(args)
    except SettingsError as exc:
        sys.stderr.write(f"gapwatch: {exc}\n")
        code = 2
    raise SystemExit(code)

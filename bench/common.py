"""Shared helpers for the benchmark scripts: infra addresses, payloads, a process sampler."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import orjson

from gapwatch.core.examples import EXAMPLES

REPO = Path(__file__).resolve().parents[1]


def kafka_bootstrap() -> str:
    if "GAPWATCH_KAFKA_BOOTSTRAP" in os.environ:
        return os.environ["GAPWATCH_KAFKA_BOOTSTRAP"]
    env = REPO / ".run" / "infra.env"
    if not env.exists():
        raise SystemExit("no .run/infra.env: run `make infra` first")
    for line in env.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "GAPWATCH_KAFKA_BOOTSTRAP":
            return value.strip().strip('"')
    raise SystemExit("GAPWATCH_KAFKA_BOOTSTRAP missing from .run/infra.env")


def ticket_events(count: int, tag: str) -> list[dict[str, Any]]:
    """Realistic ticket events (opened / replied / status changes) over `count // 4` tickets."""
    kinds = (
        "gapwatch.ticket.opened.v1",
        "gapwatch.ticket.replied.v1",
        "gapwatch.ticket.status_changed.v1",
        "gapwatch.ticket.resolved.v1",
    )
    events = []
    for i in range(count):
        doc = copy.deepcopy(EXAMPLES[kinds[i % 4]])
        item = f"T-{tag}-{i // 4}"
        doc["id"] = f"{tag}-{i}"
        doc["subject"] = item
        doc["data"]["ticket_id"] = item
        events.append(doc)
    return events


def encoded(events: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(e) for e in events]

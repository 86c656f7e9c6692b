"""Shared helpers for the benchmark scripts: infra addresses, payloads, a process sampler."""

from __future__ import annotations

import copy
import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gapwatch.core.examples import EXAMPLES
from gapwatch.kafka.clients import admin_client
from gapwatch.kafka.settings import KafkaSettings

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


async def delete_topics(settings: list[KafkaSettings]) -> None:
    """Delete the topics of these runs: their prefixed ones, and faust's internal topics named
    after a prefixed topic (the scorer's repartition topic), so benches leave no topics behind."""
    if not settings:
        return
    admin = admin_client(settings[0])
    await admin.start()
    try:
        prefixes = [s.topic_prefix for s in settings]
        mine = [
            name
            for name in await admin.list_topics()
            if any(name.startswith(p) or f"-{p}" in name for p in prefixes)
        ]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


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


# --- a process sampler: CPU and RSS of named process trees, from /proc (Linux) ---------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _proc_stats() -> dict[int, tuple[int, float, int]]:
    """pid -> (parent pid, CPU seconds used so far, resident bytes) of every live process."""
    stats = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:  # gone between the listing and the read
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ")".
        fields = raw[raw.rindex(b")") + 2 :].split()
        utime, stime = int(fields[11]), int(fields[12])
        stats[int(entry.name)] = (
            int(fields[1]),
            (utime + stime) / _CLOCK_TICKS,
            int(fields[21]) * _PAGE_BYTES,
        )
    return stats


@dataclass
class ProcessSampler:
    """Samples CPU seconds and RSS of named process trees (a root pid and its descendants).

    `sample()` reads /proc once for every name; `window(start, end)` gives per name the CPU used
    between two sample times as a percentage of one core (per process, so a process that comes
    or goes in between neither adds nor removes what it had used before), and the largest RSS
    seen in between.
    """

    roots: dict[str, list[int]] = field(default_factory=dict)
    trees: dict[str, bool] = field(default_factory=dict)
    # (monotonic time, name -> ({pid: CPU seconds so far}, RSS bytes of them all))
    samples: list[tuple[float, dict[str, tuple[dict[int, float], int]]]] = field(
        default_factory=list
    )

    def watch(self, name: str, *pids: int, tree: bool = True) -> None:
        """Count `pids` under `name`, with their descendants unless `tree` is false."""
        self.roots.setdefault(name, []).extend(pids)
        self.trees[name] = tree

    def sample(self) -> None:
        stats = _proc_stats()
        children: dict[int, list[int]] = {}
        for pid, (parent, _, _) in stats.items():
            children.setdefault(parent, []).append(pid)
        usage = {}
        for name, roots in self.roots.items():
            cpu: dict[int, float] = {}
            rss = 0
            todo = [pid for pid in roots if pid in stats]
            while todo:
                pid = todo.pop()
                if pid in cpu:
                    continue
                cpu[pid] = stats[pid][1]
                rss += stats[pid][2]
                if self.trees[name]:
                    todo.extend(children.get(pid, ()))
            usage[name] = (cpu, rss)
        self.samples.append((time.monotonic(), usage))

    def window(self, start: float, end: float) -> dict[str, tuple[float, int]]:
        """name -> (CPU % of one core, peak RSS bytes) over the samples taken in [start, end]."""
        inside = [(t, u) for t, u in self.samples if start <= t <= end]
        if len(inside) < 2:
            return {}
        elapsed = inside[-1][0] - inside[0][0]
        out = {}
        for name in self.roots:
            used = 0.0
            for (_, before), (_, after) in itertools.pairwise(inside):
                if name in before and name in after:
                    old = before[name][0]
                    # A process first seen here started since the previous sample.
                    used += sum(
                        max(0.0, t - old.get(pid, 0.0)) for pid, t in after[name][0].items()
                    )
            peak = max((u[name][1] for _, u in inside if name in u), default=0)
            out[name] = (used / max(elapsed, 1e-9) * 100, peak)
        return out

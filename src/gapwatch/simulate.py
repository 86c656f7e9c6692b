"""`gapwatch simulate`: drives the simulator into a file, the ingest API or Kafka."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import orjson

from gapwatch.simulation import Scenario, Simulator

# About five events per item on average (tickets ~4.7, jobs ~4.4, feedback ~0.35).
EVENTS_PER_ITEM = 5.0
TICK_SECONDS = 0.1

Sink = Callable[[list[dict[str, Any]]], Awaitable[None]]


def build_simulator(args: argparse.Namespace, start: datetime) -> Simulator:
    # The scenario's slip minutes are wall-clock minutes of the run; the simulator counts
    # simulated minutes, so scale by the speed.
    scenario = Scenario.named(
        args.scenario,
        slip_team=args.slip_team,
        slip_start_minutes=args.slip_start * args.speed,
        slip_end_minutes=args.slip_end * args.speed,
    )
    items_per_sim_second = args.rate / EVENTS_PER_ITEM / args.speed
    return Simulator(
        start=start, items_per_second=items_per_sim_second, scenario=scenario, seed=args.seed
    )


def run_simulation(args: argparse.Namespace) -> int:
    start = datetime.fromisoformat(args.start) if args.start else datetime.now(UTC)
    simulator = build_simulator(args, start)
    target: str = args.to
    if target.startswith("file:"):
        path = Path(target.removeprefix("file:"))
        end = start + timedelta(seconds=args.minutes * 60 * args.speed)
        count = 0
        with path.open("wb") as out:
            for event in simulator.events_until(end):
                out.write(orjson.dumps(event) + b"\n")
                count += 1
        sys.stderr.write(f"wrote {count} events ({args.scenario}) to {path}\n")
        return 0
    return asyncio.run(_live(args, simulator, start, target))


async def _live(
    args: argparse.Namespace, simulator: Simulator, start: datetime, target: str
) -> int:
    sink, close = await _open_sink(target)
    sent = 0
    began = time.monotonic()
    deadline = began + args.minutes * 60
    try:
        while (now := time.monotonic()) < deadline:
            sim_now = start + timedelta(seconds=(now - began) * args.speed)
            batch = list(simulator.events_until(sim_now))
            for offset in range(0, len(batch), 500):
                await sink(batch[offset : offset + 500])
            sent += len(batch)
            await asyncio.sleep(max(0.0, TICK_SECONDS - (time.monotonic() - now)))
    finally:
        await close()
    elapsed = time.monotonic() - began
    sys.stderr.write(f"sent {sent} events in {elapsed:.0f}s ({sent / elapsed:.0f}/s) to {target}\n")
    return 0


RETRIED_STATUSES = frozenset({429, 503})
MAX_RETRY_DELAY_SECONDS = 60.0


def retry_delay(retry_after: str | None, attempt: int, now: datetime | None = None) -> float:
    """How long to wait before sending again: what the server's `Retry-After` asks (seconds, or
    an HTTP date), at least the client's own backoff (0.5 s doubling, up to 5 s), at most a
    minute."""
    backoff = min(5.0, 0.5 * 2**attempt)
    asked = 0.0
    if retry_after:
        text = retry_after.strip()
        if text.isdigit():
            asked = float(text)
        else:
            try:
                when = parsedate_to_datetime(text)
            except (TypeError, ValueError):
                when = None
            if when is not None and when.tzinfo is not None:
                asked = (when - (now or datetime.now(UTC))).total_seconds()
    return min(MAX_RETRY_DELAY_SECONDS, max(backoff, asked))


async def _open_sink(target: str) -> tuple[Sink, Callable[[], Awaitable[None]]]:
    if target.startswith(("http://", "https://")):
        import httpx

        token = os.environ.get("GAPWATCH_INGEST_TOKEN", "dev-token")
        client = httpx.AsyncClient(
            base_url=target.rstrip("/"),
            timeout=30,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )

        async def post(events: list[dict[str, Any]]) -> None:
            for attempt in range(10):
                response = await client.post("/v1/events", content=orjson.dumps(events))
                if response.status_code == 202:
                    return
                if response.status_code not in RETRIED_STATUSES:
                    raise RuntimeError(f"ingest answered {response.status_code}: {response.text}")
                await asyncio.sleep(retry_delay(response.headers.get("Retry-After"), attempt))
            raise RuntimeError(f"ingest kept answering {response.status_code}")

        return post, client.aclose
    if target == "kafka":
        from gapwatch.core.topics import topic_name
        from gapwatch.core.validation import encode_event, validate_event
        from gapwatch.kafka.batches import CLOUDEVENTS_HEADERS
        from gapwatch.kafka.clients import reliable_producer
        from gapwatch.kafka.settings import KafkaSettings
        from gapwatch.settings import load_settings

        settings = load_settings(KafkaSettings)
        producer = reliable_producer(settings)
        await producer.start()

        async def produce(events: list[dict[str, Any]]) -> None:
            acks = []
            for raw in events:
                event = validate_event(raw)
                topic = topic_name(event.stream, settings.topic_prefix)
                acks.append(
                    await producer.send(
                        topic, encode_event(event), key=event.key, headers=list(CLOUDEVENTS_HEADERS)
                    )
                )
            await asyncio.gather(*acks)

        return produce, producer.stop
    raise SystemExit(f"--to {target!r}: expected file:PATH, kafka or http://HOST:PORT")

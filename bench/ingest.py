"""Ingest throughput: POST /v1/events (batches of 100, single events) vs a raw aiokafka producer.

Runs against the real broker from `make infra`, on fresh topics, in one run:
  1. raw: an idempotent acks=all aiokafka producer sends the same payloads, acks awaited;
  2. http-batch: clients POST batches of 100 events to a running ingest service;
  3. http-single: clients POST one event per request.
Prints events/s for each and the ratio to the raw producer.

    .venv/bin/python -m bench.ingest [--seconds 15] [--clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import orjson
from aiokafka.partitioner import murmur2

from bench.common import _proc_stats, delete_topics, encoded, kafka_bootstrap, ticket_events
from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.clients import reliable_producer
from gapwatch.kafka.settings import KafkaSettings
from gapwatch.kafka.topics import ensure_topics

TOKEN = "bench-token"


async def raw_producer_rate(
    settings: KafkaSettings, payloads: list[bytes], seconds: float
) -> tuple[float, float]:
    """Events/s, and CPU seconds per event of this process (the producer is all it runs)."""
    topic = topic_name(Stream.TICKETS, settings.topic_prefix)
    keys = [orjson.loads(p)["subject"].encode() for p in payloads]
    producer = reliable_producer(settings)
    await producer.start()
    sent = 0
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        while time.perf_counter() - started < seconds:
            acks = [
                await producer.send(topic, payload, key=key)
                for payload, key in zip(payloads, keys, strict=True)
            ]
            await asyncio.gather(*acks)
            sent += len(acks)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        await producer.stop()
    return sent / elapsed, cpu / sent


async def raw_batch_rate(settings: KafkaSettings, payloads: list[bytes], seconds: float) -> float:
    """The same payloads through create_batch/send_batch, one batch per partition per round."""
    topic = topic_name(Stream.TICKETS, settings.topic_prefix)
    keys = [orjson.loads(p)["subject"].encode() for p in payloads]
    producer = reliable_producer(settings)
    await producer.start()
    ids = sorted(await producer.partitions_for(topic))
    partition_of = [ids[(murmur2(k) & 0x7FFFFFFF) % len(ids)] for k in keys]
    sent = 0
    try:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            for chunk in range(0, len(payloads), 100):  # rounds of 100, like a request
                batches: dict[int, Any] = {}
                for i in range(chunk, min(chunk + 100, len(payloads))):
                    batch = batches.get(partition_of[i])
                    if batch is None:
                        batch = batches[partition_of[i]] = producer.create_batch()
                    batch.append(key=keys[i], value=payloads[i], timestamp=None)
                acks = [
                    await producer.send_batch(b, topic, partition=p) for p, b in batches.items()
                ]
                await asyncio.gather(*acks)
                sent += min(chunk + 100, len(payloads)) - chunk
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return sent / elapsed


async def raw_concurrent_rate(
    settings: KafkaSettings, payloads: list[bytes], seconds: float, concurrency: int
) -> float:
    """The HTTP clients' shape without HTTP: `concurrency` tasks, each sending 100 payloads and
    awaiting their acks before the next 100 (send per event, one shared producer)."""
    topic = topic_name(Stream.TICKETS, settings.topic_prefix)
    keys = [orjson.loads(p)["subject"].encode() for p in payloads]
    producer = reliable_producer(settings)
    await producer.start()
    sent = 0
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal sent
        start = offset * 100
        while time.perf_counter() < deadline:
            chunk = range(start % len(payloads), start % len(payloads) + 100)
            acks = [
                await producer.send(topic, payloads[i % len(payloads)], key=keys[i % len(payloads)])
                for i in chunk
            ]
            await asyncio.gather(*acks)
            sent += len(acks)
            start += 100 * concurrency

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return sent / elapsed


def _request(host: str, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _answer_status(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 answer (framed by Content-Length, as the ingest sends); its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


def _client(
    url: str,
    bodies: list[bytes],
    per_body: int,
    seconds: float,
    concurrency: int,
    out: multiprocessing.Queue[Any],
) -> None:
    # A lean load generator: requests are encoded once, and each of `concurrency` keep-alive
    # connections writes one and reads its answer. An HTTP client library costs several times the
    # CPU per request, CPU that a 2-core machine would take from the service being measured.
    host_port = url.removeprefix("http://")
    host, port = host_port.rsplit(":", 1)
    requests = [_request(host_port, "/v1/events", body) for body in bodies]

    async def run() -> tuple[int, int]:
        accepted = errors = 0
        deadline = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal accepted, errors
            reader, writer = await asyncio.open_connection(host, int(port))
            i = offset
            try:
                while time.perf_counter() < deadline:
                    writer.write(requests[i % len(requests)])
                    if await _answer_status(reader) == 202:
                        accepted += per_body
                    else:
                        errors += 1
                    i += concurrency
            finally:
                writer.close()

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return accepted, errors

    out.put(asyncio.run(run()))


def http_rate(
    url: str, bodies: list[bytes], per_body: int, seconds: float, clients: int, concurrency: int
) -> tuple[float, int, int]:
    """Accepted events/s, non-202 answers, accepted events."""
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    procs = [
        multiprocessing.Process(
            target=_client, args=(url, bodies[k::clients], per_body, seconds, concurrency, queue)
        )
        for k in range(clients)
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    accepted = sum(a for a, _ in results)
    return accepted / max(elapsed, seconds), sum(e for _, e in results), accepted


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) that process `pid` and its descendants have used so far."""
    stats = _proc_stats()
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += stats[current][1] if current in stats else 0.0
        todo.extend(child for child, (parent, _, _) in stats.items() if parent == current)
    return total


def start_ingest(settings: KafkaSettings, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "GAPWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "GAPWATCH_TOPIC_PREFIX": settings.topic_prefix,
        "GAPWATCH_INGEST_PORT": str(port),
        "GAPWATCH_INGEST_TOKENS": TOKEN,
        "GAPWATCH_INGEST_WORKERS": str(workers),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gapwatch_ingest"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("ingest did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each phase")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight per client")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2, help="GAPWATCH_INGEST_WORKERS")
    parser.add_argument("--rounds", type=int, default=3, help="alternating raw / HTTP rounds")
    args = parser.parse_args()

    settings = KafkaSettings(
        kafka_bootstrap=kafka_bootstrap(),
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        kafka_partitions=args.partitions,
    )
    asyncio.run(ensure_topics(settings))
    events = ticket_events(20_000, "b")
    payloads = encoded(events)
    batch_bodies = [orjson.dumps(events[i : i + 100]) for i in range(0, len(events), 100)]
    single_bodies = payloads[:5000]

    print(
        f"broker {settings.kafka_bootstrap}, {args.partitions} partitions, "
        f"{args.seconds:.0f}s per phase, {args.clients}x{args.concurrency} HTTP clients, "
        f"{args.workers} ingest worker(s)"
    )
    raw_batch = asyncio.run(raw_batch_rate(settings, payloads, args.seconds))
    print(f"raw aiokafka send_batch, 100 per round:       {raw_batch:10,.0f} events/s")
    in_flight = args.clients * args.concurrency
    raw_shaped = asyncio.run(raw_concurrent_rate(settings, payloads, args.seconds, in_flight))
    print(
        f"raw aiokafka, {in_flight} concurrent rounds of 100:  {raw_shaped:10,.0f} events/s  "
        "(the HTTP clients' shape)"
    )

    # Raw and HTTP batch phases alternate, `--rounds` times: on a shared machine the speed drifts
    # by tens of percent within minutes, and a ratio of two phases far apart measures the drift.
    # CPU per event (the producer's own process; the ingest process) is steadier than rates.
    proc, url = start_ingest(settings, args.workers)
    ratios = []
    try:
        for round_no in range(1, args.rounds + 1):
            raw, raw_cpu = asyncio.run(raw_producer_rate(settings, payloads, args.seconds))
            cpu_before = cpu_seconds(proc.pid)
            batch, batch_errors, accepted = http_rate(
                url, batch_bodies, 100, args.seconds, args.clients, args.concurrency
            )
            batch_cpu = (cpu_seconds(proc.pid) - cpu_before) / max(accepted, 1)
            ratios.append(batch / raw)
            print(
                f"round {round_no}: raw aiokafka producer (idempotent, acks=all, send per event) "
                f"{raw:8,.0f} events/s, {raw_cpu * 1e6:5.1f} us CPU/event | "
                f"POST /v1/events batches of 100 {batch:8,.0f} events/s, "
                f"ingest {batch_cpu * 1e6:5.1f} us CPU/event ({batch_errors} non-202) | "
                f"ratio {batch / raw:.2f}, CPU ratio {raw_cpu / batch_cpu:.2f}"
            )
        cpu_before = cpu_seconds(proc.pid)
        single, single_errors, accepted = http_rate(
            url, single_bodies, 1, args.seconds, args.clients, args.concurrency
        )
        single_cpu = (cpu_seconds(proc.pid) - cpu_before) / max(accepted, 1)
    finally:
        proc.terminate()
        proc.wait(15)
        asyncio.run(delete_topics([settings]))
    print(
        f"POST /v1/events, single events:             {single:10,.0f} events/s  "
        f"ratio {single / raw:.2f}  ({single_errors} non-202, {single_cpu * 1e6:.0f} us CPU/event)"
    )
    print(f"batch ingest / raw send_batch rounds:       {batch / raw_batch:.2f}")
    print(f"batch ingest / raw in the clients' shape:   {batch / raw_shaped:.2f}")
    ratio = sorted(ratios)[len(ratios) // 2]
    goal = "met" if ratio >= 0.5 else "NOT met"
    print(
        f"batch ingest / raw producer, median of {len(ratios)} rounds: {ratio:.2f}; "
        f"goal >= 0.5: {goal}"
    )


if __name__ == "__main__":
    main()

"""GAPWATCH_INGEST_WORKERS=2 on the real broker: both workers serve one port, every accepted event
is in Kafka once, /metrics counts every worker's requests, a killed worker is replaced, and
SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from gapwatch.core.topics import Stream
from gapwatch.kafka.settings import KafkaSettings
from tests.integration.conftest import (
    TOKEN,
    IngestProcess,
    read_topic,
    start_ingest,
    stop_process,
)
from tests.integration.test_ingest_api import ticket

pytestmark = pytest.mark.integration

HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture
def service(kafka: KafkaSettings, tmp_path: Path) -> Iterator[IngestProcess]:
    service = start_ingest(kafka, tmp_path, GAPWATCH_INGEST_WORKERS="2")
    yield service
    stop_process(service.process)


def workers_of(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(child) for child in children.read_text().split()} if children.exists() else set()


def metric(url: str, sample: str) -> float:
    """One sample of a fresh scrape (a new connection: whichever worker accepts it answers)."""
    with httpx.Client(headers={"Connection": "close"}) as http:
        text = http.get(url + "/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def post_batches(url: str, batches: list[list[dict[str, object]]], clients: int) -> list[int]:
    """POST every batch from `clients` separate connections; the status of each."""
    statuses: list[int] = []

    async def client(share: list[list[dict[str, object]]]) -> None:
        async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=30) as http:
            for batch in share:
                statuses.append(
                    (await http.post("/v1/events", content=orjson.dumps(batch))).status_code
                )

    await asyncio.gather(*(client(batches[k::clients]) for k in range(clients)))
    return statuses


async def test_two_workers_share_the_port_and_the_metrics(
    service: IngestProcess, kafka: KafkaSettings
):
    workers = workers_of(service.process.pid)
    assert len(workers) == 2, workers

    batches = [[ticket(f"T-w-{b}-{i}", f"w-{b}-{i}") for i in range(50)] for b in range(40)]
    statuses = await post_batches(service.url, batches, clients=8)
    assert statuses == [202] * 40

    records = await read_topic(kafka, Stream.TICKETS, 2000)
    ids = [orjson.loads(r.value)["id"] for r in records]
    assert sorted(ids) == sorted(e["id"] for batch in batches for e in batch)

    # Every scrape, whichever worker answers it (a new connection each), counts all 40 requests,
    # however the kernel spread the connections over the workers.
    for _ in range(6):
        assert metric(service.url, 'gapwatch_ingest_requests_total{code="202"}') == 40
        assert (
            metric(service.url, 'gapwatch_ingest_events_accepted_total{stream="tickets"}') == 2000
        )
        assert metric(service.url, "gapwatch_ingest_kafka_up") == 1


async def test_a_killed_worker_is_replaced_and_its_counts_are_kept(
    service: IngestProcess, kafka: KafkaSettings
):
    first = [[ticket(f"T-k-{i}", f"k-{i}") for i in range(10)]]
    assert await post_batches(service.url, first, clients=1) == [202]
    before = workers_of(service.process.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = workers_of(service.process.pid)
        if len(now) == 2 and victim not in now:
            break
        await asyncio.sleep(0.2)
    now = workers_of(service.process.pid)
    assert len(now) == 2 and victim not in now, (before, now)
    assert "exited (signal 9)" in service.log()

    # The service keeps answering on the same port while and after the worker is replaced.
    deadline = time.monotonic() + 30
    while httpx.get(service.url + "/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    second = [[ticket(f"T-k2-{b}-{i}", f"k2-{b}-{i}") for i in range(10)] for b in range(6)]
    assert await post_batches(service.url, second, clients=3) == [202] * 6
    records = await read_topic(kafka, Stream.TICKETS, 70)
    assert len({orjson.loads(r.value)["id"] for r in records}) == 70

    # Counters of a dead worker still count: totals never go backwards across a replacement.
    assert metric(service.url, 'gapwatch_ingest_requests_total{code="202"}') == 7


def test_sigterm_stops_every_worker_and_frees_the_port(service: IngestProcess):
    workers = workers_of(service.process.pid)
    assert len(workers) == 2
    metrics_dirs = list(
        Path(tempfile.gettempdir()).glob(f"gapwatch-ingest-{service.process.pid}-metrics-*")
    )
    assert len(metrics_dirs) == 1
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(20) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    port = int(service.url.rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert not metrics_dirs[0].exists()
    assert "stopping 2 ingest workers" in service.log()


def test_ctrl_c_lets_a_request_in_flight_finish(kafka: KafkaSettings, tmp_path: Path):
    """Ctrl-C reaches the terminal's whole process group; the supervisor stops the workers
    gracefully, and a request whose body is still arriving is finished and answered 202."""
    # A session of its own stands in for a terminal's foreground process group.
    service = start_ingest(kafka, tmp_path, new_session=True, GAPWATCH_INGEST_WORKERS="2")
    process, url = service.process, service.url
    port = int(url.rsplit(":", 1)[1])
    try:
        body = orjson.dumps([ticket("T-c-1", "c-1")])
        head = (
            f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(head + body[:10])
            time.sleep(0.5)  # the worker is now inside the request, reading its body
            os.killpg(process.pid, signal.SIGINT)
            time.sleep(1.0)
            sock.sendall(body[10:])
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
        assert process.wait(20) == 0
        assert "SIGINT: stopping 2 ingest workers" in service.log()
    finally:
        stop_process(process)

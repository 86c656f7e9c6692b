"""Fixtures for tests against the real broker and database started by `make infra`."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from gapwatch.core.topics import INPUT_STREAMS, Stream, topic_name
from gapwatch.kafka.clients import admin_client, consumer
from gapwatch.kafka.settings import KafkaSettings
from gapwatch.kafka.topics import ensure_topics

REPO = Path(__file__).resolve().parents[2]
INFRA_ENV = REPO / ".run" / "infra.env"
TOKEN = "integration-token-7f3a"
PARTITIONS = 3
log = logging.getLogger(__name__)


def infra_env() -> dict[str, str]:
    """Addresses written by `make infra`; the environment wins, as in the services."""
    values: dict[str, str] = {}
    if INFRA_ENV.exists():
        for line in INFRA_ENV.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip().strip('"')
    for key in ("GAPWATCH_KAFKA_BOOTSTRAP", "GAPWATCH_DATABASE_URL"):
        if key in os.environ:
            values[key] = os.environ[key]
    if "GAPWATCH_KAFKA_BOOTSTRAP" not in values:
        pytest.fail(f"no Kafka address: run `make infra` first (it writes {INFRA_ENV})")
    return values


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that stop the shared broker run after everything else.
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


@pytest.fixture(scope="session")
def bootstrap() -> str:
    return infra_env()["GAPWATCH_KAFKA_BOOTSTRAP"]


@pytest.fixture
async def kafka(bootstrap: str) -> AsyncIterator[KafkaSettings]:
    """Settings for a fresh set of topics, isolated from every other test by a prefix.

    Afterwards the test's topics (and the internal ones faust named after them) are deleted,
    so the broker does not carry hundreds of dead topics through the rest of the session.
    """
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = KafkaSettings(
        kafka_bootstrap=bootstrap, topic_prefix=prefix, kafka_partitions=PARTITIONS
    )
    await asyncio.wait_for(ensure_topics(settings), 60)
    yield settings
    try:
        await asyncio.wait_for(delete_topics_of(settings), 30)
    except (KafkaError, TimeoutError) as exc:  # the broker may be down after a fault test
        log.warning("could not delete the topics of %s: %r", prefix, exc)


async def delete_topics_of(settings: KafkaSettings) -> None:
    admin = admin_client(settings)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if settings.topic_prefix in t]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class IngestProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_ingest(
    kafka: KafkaSettings,
    log_dir: Path,
    port: int | None = None,
    *,
    new_session: bool = False,
    **env: str,
) -> IngestProcess:
    """The ingest service on `port` (a free one when None): a restarted one is found where
    clients left it. `new_session`: in a process group of its own, as under a terminal."""
    port = port or free_port()
    log_path = log_dir / f"ingest-{port}.log"
    environment = {
        **os.environ,
        "GAPWATCH_KAFKA_BOOTSTRAP": kafka.kafka_bootstrap,
        "GAPWATCH_TOPIC_PREFIX": kafka.topic_prefix,
        "GAPWATCH_INGEST_PORT": str(port),
        "GAPWATCH_INGEST_TOKENS": TOKEN,
        **env,
    }
    service = IngestProcess(
        f"http://127.0.0.1:{port}",
        spawn("gapwatch_ingest", environment, log_path, new_session=new_session),
        log_path,
    )

    def ready() -> bool:
        try:
            return httpx.get(service.url + "/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until_ready("ingest", service.process, log_path, ready, timeout=60)
    return service


def spawn(
    module: str, env: dict[str, str], log_path: Path, *, new_session: bool = False
) -> subprocess.Popen[bytes]:
    """Start `python -m module` with its output appended to `log_path`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=new_session,
        )


def wait_until_ready(
    what: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    ready: Callable[[], bool],
    timeout: float,
) -> None:
    """Poll `ready` until it holds; fail with the log tail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{tail}")
        if ready():
            return
        time.sleep(0.2)
    process.kill()
    tail = log_path.read_text(errors="replace")[-4000:]
    raise RuntimeError(f"{what} not ready within {timeout:.0f}s:\n{tail}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture
def ingest(kafka: KafkaSettings, tmp_path: Path) -> Iterator[IngestProcess]:
    service = start_ingest(kafka, tmp_path, GAPWATCH_INGEST_PRODUCE_TIMEOUT_SECONDS="5")
    yield service
    stop_process(service.process)


@pytest.fixture
async def client(ingest: IngestProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=ingest.url,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=30,
    ) as http:
        yield http


async def end_offsets(settings: KafkaSettings, streams: tuple[Stream, ...] = INPUT_STREAMS) -> int:
    """Total records in the given streams' topics (sum of end offsets)."""
    reader = consumer(settings)
    await reader.start()
    try:
        parts = [
            TopicPartition(topic_name(stream, settings.topic_prefix), p)
            for stream in streams
            for p in range(settings.kafka_partitions)
        ]
        offsets = await reader.end_offsets(parts)
    finally:
        await reader.stop()
    return sum(offsets.values())


async def read_topic(
    settings: KafkaSettings, stream: Stream, expected: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read exactly `expected` records from the start of a stream's topic, or fail on timeout."""
    topic = topic_name(stream, settings.topic_prefix)
    reader = consumer(settings, topic, auto_offset_reset="earliest", enable_auto_commit=False)
    await reader.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(records) < expected:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            batch = await reader.getmany(timeout_ms=int(min(remaining, 1.0) * 1000))
            for part in batch.values():
                records.extend(part)
        if len(records) == expected:
            # Nothing more must follow: a short extra poll catches duplicates.
            extra = await reader.getmany(timeout_ms=500)
            for part in extra.values():
                records.extend(part)
    finally:
        await reader.stop()
    return records


ALERTMANAGER_SCRIPT = REPO / "deploy" / "local" / "alertmanager.sh"


# --- a real Alertmanager, started by the repo's script ----------------------------------------


def alertmanager_script(*args: str) -> subprocess.CompletedProcess[str]:
    # The first run on a fresh machine installs the package: allow for apt.
    return subprocess.run(
        ["bash", str(ALERTMANAGER_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@dataclass
class Alertmanager:
    url: str
    dir: Path


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    """A fresh Alertmanager on a free port, its storage in this test's tmp dir."""
    directory = tmp_path / "alertmanager"
    port = free_port()
    started = alertmanager_script("start", str(directory), str(port))
    assert started.returncode == 0, f"alertmanager.sh start failed:\n{started.stderr}"
    try:
        yield Alertmanager(f"http://127.0.0.1:{port}", directory)
    finally:
        stopped = alertmanager_script("stop", str(directory))
        assert stopped.returncode == 0, f"alertmanager.sh stop failed:\n{stopped.stderr}"

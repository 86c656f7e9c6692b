"""`promtool check metrics` passes on live scrapes of the ingest service and the scorer."""

from __future__ import annotations

import copy
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gapwatch.core.examples import EXAMPLES
from gapwatch.kafka.settings import KafkaSettings
from gapwatch.simulation import Simulator
from tests.integration.conftest import REPO, stop_process
from tests.integration.scorer_support import ScorerProcess, bulk_load, start_scorer

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def promtool() -> str:
    """The promtool binary; deploy/local/promtool.sh installs it on a fresh machine."""
    out = subprocess.run(
        ["bash", str(REPO / "deploy" / "local" / "promtool.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, f"deploy/local/promtool.sh failed:\n{out.stderr}"
    return out.stdout.strip()


def check_metrics(promtool: str, scrape: str) -> None:
    """promtool exits 0 only for a parseable exposition with no lint problems."""
    out = subprocess.run(
        [promtool, "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, (
        f"promtool check metrics exited {out.returncode}:\n{out.stdout}{out.stderr}"
    )


def samples(scrape: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
    }


def total(found: Samples, name: str) -> float:
    return sum(value for (sample, _), value in found.items() if sample == name)


def labelled(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


async def test_ingest_scrape_passes_promtool(promtool: str, client: httpx.AsyncClient):
    valid = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    response = await client.post("/v1/events", content=orjson.dumps(valid))
    assert response.status_code == 202, response.text
    invalid = copy.deepcopy(valid)
    invalid["data"]["opened_at"] = "2026-03-02T09:15:00"  # no offset: rejected
    response = await client.post("/v1/events", content=orjson.dumps(invalid))
    assert response.status_code == 422, response.text

    scrape = (await client.get("/metrics")).text
    check_metrics(promtool, scrape)
    found = samples(scrape)
    assert labelled(found, "gapwatch_ingest_requests_total", code="202") == 1
    assert labelled(found, "gapwatch_ingest_requests_total", code="422") == 1
    assert labelled(found, "gapwatch_ingest_events_accepted_total", stream="tickets") == 1
    assert total(found, "gapwatch_ingest_events_rejected_total") == 1
    assert total(found, "gapwatch_ingest_produce_duration_seconds_count") == 1
    assert labelled(found, "gapwatch_ingest_kafka_up") == 1
    assert total(found, "process_resident_memory_bytes") > 10 * 2**20


def wait_for_windows(scorer: ScorerProcess, timeout: float = 120) -> str:
    """A scrape that shows processed events and at least one rolling-window gauge."""
    deadline = time.monotonic() + timeout
    while True:
        scrape = scorer.metrics()
        found = samples(scrape)
        events = total(found, "gapwatch_scorer_events_total")
        windows = sum(1 for name, _ in found if name == "gapwatch_window_outcomes")
        if events > 0 and windows > 0:
            return scrape
        if scorer.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(
                f"no events ({events}) or window gauges ({windows}) in the scorer's metrics:\n"
                f"{scorer.log()[-3000:]}"
            )
        time.sleep(0.5)


def test_scorer_scrape_passes_promtool(promtool: str, kafka: KafkaSettings, tmp_path: Path):
    start = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    sim = Simulator(start=start, items_per_second=0.2, seed=21)
    lines = [orjson.dumps(e) for e in sim.events_until(start + timedelta(minutes=20))]
    path = tmp_path / "stream.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    scorer = start_scorer(kafka, tmp_path, "promtool")
    try:
        bulk_load(kafka, path)
        scrape = wait_for_windows(scorer)
        check_metrics(promtool, scrape)
        found = samples(scrape)
        assert total(found, "gapwatch_promise_outcomes_total") > 0
        assert any(name == "gapwatch_open_promises" for name, _ in found)
        assert total(found, "process_resident_memory_bytes") > 10 * 2**20
        assert total(found, "process_cpu_seconds_total") > 0
        assert total(found, "gapwatch_scorer_event_loop_lag_seconds_count") > 0
    finally:
        stop_process(scorer.process)


def test_the_cost_of_lateness_baseline_has_data_on_the_simulators_stream(
    kafka: KafkaSettings, tmp_path: Path
):
    """Issue 20: `on_time` held only gaps of exactly 0, so the satisfaction dashboard's "cost
    of lateness vs on time" panel showed nothing. On the simulator's stream, a live scrape now
    has CSAT answers in `on_time` and in another bucket to compare it with."""
    start = (datetime.now(UTC) - timedelta(hours=6)).replace(microsecond=0)
    sim = Simulator(start=start, items_per_second=0.05, seed=5)
    lines = [orjson.dumps(e) for e in sim.events_until(start + timedelta(hours=5))]
    path = tmp_path / "stream.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    scorer = start_scorer(kafka, tmp_path, "baseline")
    try:
        bulk_load(kafka, path)
        deadline = time.monotonic() + 120
        while True:
            found = samples(scorer.metrics())
            counts: dict[str, float] = {}
            for (name, labels), value in found.items():
                if name == "gapwatch_window_csat_by_gap" and ("stat", "count") in labels:
                    bucket = dict(labels)["bucket"]
                    counts[bucket] = counts.get(bucket, 0) + value
            others = sum(v for b, v in counts.items() if b != "on_time")
            if counts.get("on_time", 0) > 0 and others > 0:
                break  # the panel's baseline, and a bucket to compare with it
            assert time.monotonic() < deadline, f"CSAT by gap bucket: {counts}"
            time.sleep(1)
    finally:
        stop_process(scorer.process)

"""A slice of the real ServiceNow log through the live scorer gives exactly `gapwatch replay`."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from gapwatch.config import load_policies
from gapwatch.core.clock import ClockConfig
from gapwatch.core.gaps import Outcome
from gapwatch.core.scoring import ScoringConfig, replay
from gapwatch.importers import ImportOptions, get_source
from gapwatch.importers.pipeline import run_import
from gapwatch.kafka.settings import KafkaSettings
from tests.integration.conftest import REPO, stop_process
from tests.integration.scorer_support import bulk_load, flush_events, start_scorer
from tests.integration.test_scorer_live import gap_events
from tests.unit.test_import_servicenow import REAL_ZIP

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

POLICIES = REPO / "deploy" / "config" / "servicenow-policies.yaml"
INCIDENTS = 400


@pytest.mark.skipif(not REAL_ZIP.is_file(), reason="the shared ServiceNow log is not here")
async def test_a_servicenow_slice_through_the_live_scorer_equals_replay(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    policies = load_policies(POLICIES)
    imported = run_import(
        get_source("servicenow"),
        REAL_ZIP,
        ImportOptions(policies=policies, limit=INCIDENTS),
        progress=False,
    )
    assert not imported.stats.invalid
    lines = list(imported.events)
    last = max(datetime.fromisoformat(orjson.loads(line)["time"]) for line in lines)
    # One late event per partition moves every watermark past the slice's due times.
    lines += flush_events(last + timedelta(days=30), kafka.kafka_partitions, kafka.topic_prefix)
    path = tmp_path / "servicenow.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    want = replay(lines, ScoringConfig(ClockConfig.from_policies(policies)))
    assert want.rejected == []
    outcomes = {e.data.outcome for e in want.gap_events}
    assert {Outcome.MET, Outcome.BREACHED} <= outcomes, outcomes

    scorer = start_scorer(
        kafka,
        tmp_path,
        "servicenow",
        GAPWATCH_SCORER_WALL_CLOCK="false",
        GAPWATCH_SCORER_POLICIES_FILE=str(POLICIES),
    )
    try:
        bulk_load(kafka, path)
        live = await gap_events(kafka, len(want.gap_events))
        replayed = {e.id: e.model_dump(mode="json", exclude_none=True) for e in want.gap_events}
        assert set(live) == set(replayed), (
            len(set(replayed) - set(live)),
            len(set(live) - set(replayed)),
        )
        assert all(live[i] == replayed[i] for i in replayed)
    finally:
        stop_process(scorer.process)

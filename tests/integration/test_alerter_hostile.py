"""Issue 27 #5: requests that answered 500 with a stack trace are 4xx, and the alerter serves on."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gapwatch.kafka.settings import KafkaSettings
from tests.integration.alerter_support import (
    ALERTER_TOKEN,
    alerter_rig,
)

pytestmark = pytest.mark.integration


async def test_nul_bytes_time_edges_and_nan_are_4xx_not_500(kafka: KafkaSettings, tmp_path: Path):
    auth = {"Authorization": f"Bearer {ALERTER_TOKEN}", "Content-Type": "application/json"}
    silence = '{"matchers": {"team": %s}, %s, "created_by": "ana", "comment": "maintenance"}'
    async with (
        alerter_rig(kafka, tmp_path) as rig,
        httpx.AsyncClient(base_url=rig.alerter.url, timeout=10) as http,
    ):
        token_free = [
            "/v1/alerts?rule=%00",
            "/v1/alerts?label=team%3Dbill%00ing",
            "/v1/alerts/%00",
            "/v1/promises?team=bill%00ing",
            "/v1/promises/T%00-1",
        ]
        for path in token_free:
            answer = await http.get(path)
            assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text)
        bodies = {
            "NUL in a matcher": silence % ('"bill\\u0000ing"', '"duration_seconds": 60'),
            "NUL in the comment": silence.replace("maintenance", "main\\u0000tenance")
            % ('"billing"', '"duration_seconds": 60'),
            "year 1 at +14:00": silence
            % ('"billing"', '"starts_at": "0001-01-01T00:00:00+14:00", "duration_seconds": 60'),
            "year 9999 at -12:00": silence
            % ('"billing"', '"starts_at": "9999-12-31T23:59:59-12:00", "duration_seconds": 60'),
            "NaN": silence % ('"billing"', '"duration_seconds": NaN'),
            "Infinity": silence % ('"billing"', '"duration_seconds": Infinity'),
            "entirely in the past": silence
            % ('"billing"', '"starts_at": "2020-01-01T00:00:00Z", "duration_seconds": 60'),
        }
        for name, body in bodies.items():
            answer = await http.post("/v1/silences", content=body, headers=auth)
            assert 400 <= answer.status_code < 500, (name, answer.status_code, answer.text)
        assert (await http.get("/healthz")).status_code == 200
        assert rig.alerter.process.poll() is None
        assert "Traceback" not in rig.alerter.log()

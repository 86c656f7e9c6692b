"""Issue 27 #5: requests that answered 500 with a stack trace are 4xx, and the alerter serves on."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
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


async def test_writes_are_authenticated_before_their_body_and_bodies_are_bounded(
    kafka: KafkaSettings, tmp_path: Path
):
    """Issue 27 #6: a 150 MB POST without a token was read and parsed before the 401, and a
    20 MB invalid body came back as a 60 MB 422."""
    auth = {"Authorization": f"Bearer {ALERTER_TOKEN}", "Content-Type": "application/json"}
    async with (
        alerter_rig(kafka, tmp_path) as rig,
        httpx.AsyncClient(base_url=rig.alerter.url, timeout=30) as http,
    ):
        # 150 MB declared, 64 KB sent: the answers come from the headers alone.
        for head, status in (
            (b"", b" 401 "),
            (f"Authorization: Bearer {ALERTER_TOKEN}\r\n".encode(), b" 413 "),
        ):
            host, port = rig.alerter.url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"POST /v1/silences HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + head
                + b"Content-Length: 150000000\r\n\r\n"
                + b"[" * 65536
            )
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 10)
            assert status in line, line
            writer.close()
        # Within the limit but invalid: the answer names fields, and never quotes the input.
        filler = "x" * 500_000
        body = b'{"matchers": {"team": "%s"}, "created_by": "a", "comment": "b"}' % filler.encode()
        answer = await http.post("/v1/silences", content=body, headers=auth)
        assert answer.status_code == 422
        assert len(answer.content) < 10_000 and filler[:1000] not in answer.text
        assert (await http.get("/healthz")).status_code == 200


async def test_schemathesis_finds_no_server_error(kafka: KafkaSettings, tmp_path: Path):
    """Issue 27 #5: every route of the alerter's OpenAPI, fuzzed, answers without a 5xx."""
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary, "schemathesis is a dev dependency"
    async with alerter_rig(kafka, tmp_path) as rig:
        run = await asyncio.create_subprocess_exec(
            binary,
            "run",
            rig.alerter.url + "/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance",
            "-H",
            f"Authorization: Bearer {ALERTER_TOKEN}",
            "--max-examples",
            os.environ.get("GAPWATCH_FUZZ_EXAMPLES", "60"),
            "--seed",
            "20261205",
            "--request-timeout",
            "30",
            "--report-dir",
            str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        output, _ = await asyncio.wait_for(run.communicate(), timeout=900)
        text = output.decode(errors="replace")
        (tmp_path / "schemathesis.txt").write_text(text)
        assert run.returncode == 0, text[-8000:]
        assert rig.alerter.process.poll() is None
        assert "Traceback" not in rig.alerter.log()

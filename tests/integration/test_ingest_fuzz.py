"""Property-based runs against the live ingest API: no input may cause a 5xx."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gapwatch.core.examples import EXAMPLES
from tests.integration.conftest import TOKEN, IngestProcess

pytestmark = pytest.mark.integration


def test_schemathesis_finds_no_server_error(ingest: IngestProcess, tmp_path: Path):
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary, "schemathesis is a dev dependency"
    out = subprocess.run(
        [
            binary,
            "run",
            ingest.url + "/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--max-examples",
            os.environ.get("GAPWATCH_FUZZ_EXAMPLES", "60"),
            "--seed",
            "20261123",
            "--request-timeout",
            "30",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def _mutations() -> st.SearchStrategy[dict[str, Any]]:
    """Valid examples with one field replaced by arbitrary JSON, or left intact."""
    values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=30),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=8,
    )

    @st.composite
    def mutated(draw: st.DrawFn) -> dict[str, Any]:
        doc = copy.deepcopy(EXAMPLES[draw(st.sampled_from(sorted(EXAMPLES)))])
        target = doc if draw(st.booleans()) else doc["data"]
        key = draw(st.sampled_from(sorted(target)) | st.text(min_size=1, max_size=8))
        if draw(st.booleans()):
            target[key] = draw(values)
        return doc

    return mutated()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(_mutations(), min_size=1, max_size=5))
def test_mutated_events_get_202_or_a_precise_422(
    ingest: IngestProcess, batch: list[dict[str, Any]]
):
    response = httpx.post(
        ingest.url + "/v1/events",
        content=json.dumps(batch).encode(),  # stdlib: keeps integers beyond 64 bits
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code in (202, 422), response.text
    if response.status_code == 422:
        errors = response.json()["errors"]
        assert errors and all(0 <= e["index"] < len(batch) and e["code"] for e in errors)
    else:
        assert response.json() == {"accepted": len(batch)}

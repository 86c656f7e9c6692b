"""Settings come from the environment; a bad value fails naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gapwatch.settings import SettingsError, load_settings
from gapwatch_ingest.settings import IngestSettings


def test_defaults_with_a_token(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GAPWATCH_INGEST_TOKENS", "a, b,,")
    settings = load_settings(IngestSettings)
    assert settings.token_list() == [b"a", b"b"]
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert settings.ingest_max_batch_events == 1000
    assert "a, b" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GAPWATCH_INGEST_PORT", "eighty"),
        ("GAPWATCH_INGEST_PORT", "70000"),
        ("GAPWATCH_INGEST_MAX_BATCH_EVENTS", "0"),
        ("GAPWATCH_KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("GAPWATCH_KAFKA_PARTITIONS", "-1"),
        ("GAPWATCH_TOPIC_PREFIX", "bad prefix"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str):
    monkeypatch.setenv("GAPWATCH_INGEST_TOKENS", "t")
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings(IngestSettings)


def test_tokens_are_required_unless_auth_is_explicitly_disabled(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("GAPWATCH_INGEST_TOKENS", raising=False)
    with pytest.raises(SettingsError, match="GAPWATCH_INGEST_TOKENS"):
        load_settings(IngestSettings)
    monkeypatch.setenv("GAPWATCH_INGEST_AUTH_DISABLED", "true")
    assert load_settings(IngestSettings).ingest_auth_disabled


def test_service_refuses_to_start_on_a_bad_setting():
    env = {"GAPWATCH_INGEST_TOKENS": "t", "GAPWATCH_INGEST_PORT": "eighty", "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-m", "gapwatch_ingest"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "GAPWATCH_INGEST_PORT" in out.stderr

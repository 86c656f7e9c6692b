"""Settings come from the environment; a bad value fails naming the variable."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest

from gapwatch.core.alerts.rules import AlertsConfig
from gapwatch.kafka.settings import KafkaSettings
from gapwatch.settings import SettingsError, load_settings
from gapwatch_alerter.receivers import build_receivers
from gapwatch_alerter.settings import AlerterSettings
from gapwatch_ingest.settings import IngestSettings
from gapwatch_scorer.settings import ScorerSettings


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


# --- secrets stay out of every printed form of the settings ---------------------------------

SECRETS = {
    "GAPWATCH_INGEST_TOKENS": "ingest-token-c81f,ingest-token-2b7d",
    "GAPWATCH_ALERTER_TOKENS": "alerter-token-93ae",
    "GAPWATCH_KAFKA_SASL_PASSWORD": "sasl-password-4e0b",
    "GAPWATCH_DATABASE_URL": "postgresql://gapwatch:db-password-77d2@db.example:5432/gw",
}
SECRET_VALUES = (
    "ingest-token-c81f",
    "ingest-token-2b7d",
    "alerter-token-93ae",
    "sasl-password-4e0b",
    "db-password-77d2",
)


def _printed_forms(settings: KafkaSettings) -> dict[str, str]:
    return {
        "repr": repr(settings),
        "str": str(settings),
        "model_dump_json": settings.model_dump_json(),
        "model_dump": repr(settings.model_dump()),
    }


@pytest.mark.parametrize(
    "settings_cls",
    [KafkaSettings, IngestSettings, AlerterSettings, ScorerSettings],
    ids=lambda cls: cls.__name__,
)
def test_settings_never_print_a_secret(
    monkeypatch: pytest.MonkeyPatch, settings_cls: type[KafkaSettings]
):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GAPWATCH_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("GAPWATCH_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("GAPWATCH_KAFKA_SASL_USERNAME", "gapwatch-user")
    settings = load_settings(settings_cls)
    password = settings.kafka_sasl_password
    assert password is not None and password.get_secret_value() == "sasl-password-4e0b"
    for form, text in _printed_forms(settings).items():
        leaked = [s for s in SECRET_VALUES if s in text]
        assert not leaked, f"{settings_cls.__name__} {form} shows {leaked}"


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("GAPWATCH_ALERTER_PORT", "eighty", "GAPWATCH_ALERTER_PORT"),
        ("GAPWATCH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL", "GAPWATCH_KAFKA_SASL_MECHANISM"),
    ],
)
def test_a_settings_error_never_quotes_a_secret(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
):
    for variable, secret in SECRETS.items():
        monkeypatch.setenv(variable, secret)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(AlerterSettings)
    message = str(caught.value)
    assert named in message
    assert not [s for s in SECRET_VALUES if s in message], message


def test_receiver_clients_never_print_their_secrets():
    config = AlertsConfig.model_validate(
        {
            "version": "t",
            "rules": [{"name": "r1", "condition": {"type": "overdue", "above": 0}}],
            "receivers": [
                {
                    "name": "hook",
                    "type": "webhook",
                    "url_env": "HOOK_URL",
                    "secret_env": "HOOK_KEY",
                },
                {"name": "slack", "type": "slack", "url_env": "SLACK_URL"},
                {"name": "pd", "type": "pagerduty", "routing_key_env": "PD_KEY"},
            ],
        }
    )
    env = {
        "HOOK_URL": "https://hooks.example.com/in/hook-path-token-5a1c",
        "HOOK_KEY": "hmac-key-0d3f",
        "SLACK_URL": "https://hooks.slack.com/services/T1/B2/slack-token-e6b9",
        "PD_KEY": "pagerduty-key-81c4",
    }

    async def build() -> list[str]:
        async with httpx.AsyncClient() as http:
            clients = build_receivers(config, env, http, alerter_url="http://127.0.0.1:8083")
            return [f"{c!r} {c!s} {vars(c).get('name')}" for c in clients.values()]

    for text in asyncio.run(build()):
        leaked = [
            v
            for v in (
                "hook-path-token-5a1c",
                "hmac-key-0d3f",
                "slack-token-e6b9",
                "pagerduty-key-81c4",
            )
            if v in text
        ]
        assert not leaked, text


def test_topic_configs_name_known_streams():
    from gapwatch.core.topics import Stream
    from gapwatch.kafka.settings import KafkaSettings
    from gapwatch.kafka.topics import TOPIC_CONFIGS, topic_configs

    settings = KafkaSettings(kafka_topic_configs="gaps:retention.ms=1, gaps:segment.ms=2")
    assert topic_configs(settings, Stream.GAPS) == {
        "cleanup.policy": "delete",
        "retention.ms": "1",
        "segment.ms": "2",
    }
    assert topic_configs(settings, Stream.JOBS) == TOPIC_CONFIGS[Stream.JOBS]
    assert set(TOPIC_CONFIGS) == set(Stream)
    for bad in ("gap:retention.ms=1", "gaps retention.ms=1", "gaps:retention.ms="):
        with pytest.raises(ValueError, match=r"kafka_topic_configs|not a stream|String should"):
            KafkaSettings(kafka_topic_configs=bad)

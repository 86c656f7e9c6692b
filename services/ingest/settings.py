"""Ingest service settings, from GAPWATCH_* environment variables."""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from gapwatch.kafka.settings import KafkaSettings
from gapwatch.settings import TimeBoundSettings


class IngestSettings(KafkaSettings, TimeBoundSettings):
    """Everything the ingest service reads from its environment, each with its default."""

    model_config = SettingsConfigDict(env_prefix="GAPWATCH_", extra="ignore", frozen=True)

    ingest_host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    ingest_port: int = Field(default=8081, ge=1, le=65535, description="HTTP port.")
    ingest_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes serving the port. One process validates on one core; more share "
        "one listening socket, each with its own Kafka producer, and /metrics sums them all.",
    )
    ingest_tokens: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated bearer tokens accepted on write endpoints.",
    )
    ingest_auth_disabled: bool = Field(
        default=False, description="Accept writes without a token (local experiments only)."
    )
    ingest_max_body_bytes: int = Field(
        default=1_048_576, ge=1024, le=64 * 1_048_576, description="Largest request body accepted."
    )
    ingest_max_batch_events: int = Field(
        default=1000, ge=1, le=100_000, description="Most events accepted in one request."
    )
    ingest_body_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Deadline for receiving a whole request body (408), or the rest of a body "
        "left unread after an early answer (the connection closes).",
    )
    ingest_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Deadline for receiving a request line and headers, from the connection's "
        "opening or the next request's first byte (408, the connection closes).",
    )
    ingest_max_header_bytes: int = Field(
        default=65_536,
        ge=4096,
        le=1_048_576,
        description="Largest request line plus headers accepted (431, the connection closes).",
    )
    ingest_max_connections: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Most client connections one ingest worker holds open; one more is answered "
        "503 (Retry-After: 1) and closed at once.",
    )
    ingest_produce_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="How long a request waits for Kafka to acknowledge before answering 503.",
    )

    @model_validator(mode="after")
    def _tokens_or_explicitly_open(self) -> Self:
        if not self.ingest_auth_disabled and not self.token_list():
            raise ValueError(
                "GAPWATCH_INGEST_TOKENS is empty: set at least one token, "
                "or GAPWATCH_INGEST_AUTH_DISABLED=true to accept unauthenticated writes"
            )
        return self

    def token_list(self) -> list[bytes]:
        raw = self.ingest_tokens.get_secret_value()
        return [t.strip().encode() for t in raw.split(",") if t.strip()]

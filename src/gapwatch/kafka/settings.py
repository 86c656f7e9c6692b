"""Kafka connection settings, read from GAPWATCH_KAFKA_* environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """How to reach the broker; SASL and TLS settings pass straight through to aiokafka."""

    model_config = SettingsConfigDict(env_prefix="GAPWATCH_", extra="ignore", frozen=True)

    kafka_bootstrap: str = Field(
        default="127.0.0.1:19092", description="Comma-separated host:port list of brokers."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    kafka_ssl_cafile: str | None = Field(default=None, description="CA bundle for TLS.")
    kafka_ssl_certfile: str | None = Field(default=None, description="Client certificate (mTLS).")
    kafka_ssl_keyfile: str | None = Field(default=None, description="Client key (mTLS).")
    kafka_client_id: str = Field(default="gapwatch", description="Client id sent to the broker.")
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Prefix for every topic name, to run isolated copies on one cluster.",
    )
    kafka_partitions: int = Field(
        default=6,
        ge=1,
        le=1024,
        description="Partitions of the input topics (co-partitioned: all share this count).",
    )
    kafka_replication_factor: int = Field(
        default=1, ge=1, le=16, description="Replication factor of topics gapwatch creates."
    )

"""Kafka connection settings, read from GAPWATCH_KAFKA_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gapwatch.core.topics import Stream


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
    kafka_topic_configs: str = Field(
        default="",
        max_length=4000,
        pattern=r"^\s*([a-z]+:[a-z0-9.]+=[^,;\s]+\s*(,\s*[a-z]+:[a-z0-9.]+=[^,;\s]+\s*)*)?$",
        description="Topic configs that replace gapwatch's defaults when `gapwatch topics` creates "
        "a topic: comma-separated stream:config=value, e.g. "
        "`gaps:retention.ms=604800000,deadletter:retention.ms=-1` (streams: tickets, jobs, "
        "feedback, gaps, scores, promises, alerts, deadletter).",
    )

    @model_validator(mode="after")
    def _topic_configs_name_streams(self) -> Self:
        known = {s.value for s in Stream}
        for item in self.kafka_topic_configs.split(","):
            stream = item.strip().partition(":")[0]
            if item.strip() and stream not in known:
                raise ValueError(
                    f"GAPWATCH_KAFKA_TOPIC_CONFIGS: {stream!r} is not a stream "
                    f"({', '.join(sorted(known))})"
                )
        return self

    @model_validator(mode="after")
    def _security_settings_agree(self) -> Self:
        # aiokafka would refuse these only when a client is built (in a background task of a
        # running service) or, for a mechanism without SASL, silently connect without it.
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_"):
            missing = [
                f"GAPWATCH_KAFKA_SASL_{name.upper()}"
                for name, value in (
                    ("mechanism", self.kafka_sasl_mechanism),
                    ("username", self.kafka_sasl_username),
                    ("password", self.kafka_sasl_password),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"GAPWATCH_KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}"
                )
        elif self.kafka_sasl_mechanism:
            raise ValueError(
                f"GAPWATCH_KAFKA_SASL_MECHANISM is set but GAPWATCH_KAFKA_SECURITY_PROTOCOL is "
                f"{protocol}: use SASL_PLAINTEXT or SASL_SSL"
            )
        files = {
            "GAPWATCH_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "GAPWATCH_KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "GAPWATCH_KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        for variable, path in files.items():
            if path is None:
                continue
            if "SSL" not in protocol:
                raise ValueError(
                    f"{variable} is set but GAPWATCH_KAFKA_SECURITY_PROTOCOL is {protocol}: "
                    "use SSL or SASL_SSL"
                )
            if not Path(path).is_file():
                raise ValueError(f"{variable}: no such file {path!r}")
        return self

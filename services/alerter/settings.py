"""Alerter settings, from GAPWATCH_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from gapwatch.kafka.settings import KafkaSettings
from gapwatch.settings import TimeBoundSettings


class AlerterSettings(KafkaSettings, TimeBoundSettings):
    """Everything the alerter reads from its environment, each with its default."""

    model_config = SettingsConfigDict(env_prefix="GAPWATCH_", extra="ignore", frozen=True)

    alerter_host: str = Field(default="127.0.0.1", description="Address the HTTP API binds.")
    alerter_port: int = Field(default=8083, ge=1, le=65535, description="HTTP API port.")
    alerter_public_url: str = Field(
        default="http://127.0.0.1:8083",
        description="How people reach this API; links in notifications point here.",
    )
    database_url: SecretStr = Field(
        default=SecretStr("postgresql://gapwatch@127.0.0.1:15432/gapwatch"),
        description="PostgreSQL DSN (libpq form; sslmode=... passes TLS settings through).",
    )
    alerter_db_schema: str = Field(
        default="gapwatch",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL schema holding the alerter's tables.",
    )
    alerter_rules_file: Path = Field(
        default=Path("deploy/config/alerts.yaml"), description="Alert rules, receivers, routes."
    )
    runbook_base_url: str = Field(
        default="https://github.com/gapwatch/gapwatch/blob/main/",
        max_length=1000,
        description="A rule's runbook_url that is a path (docs/runbooks/x.md) is joined to this, "
        "so pages link to a runbook a reader can open: point it at your own copy.",
    )
    grafana_url: str = Field(
        default="",
        max_length=1000,
        description="Grafana's base URL (https://grafana.example.com): a rule's dashboard_url "
        "that is a path (d/gapwatch-overview) is joined to it, and the alert's labels become "
        "dashboard variables. Empty: dashboard paths stay as written.",
    )
    scorer_segment_labels: str = Field(
        default="team,region,priority",
        description="The scorer's segment labels (same variable as the scorer's): rules may "
        "match and group only on these.",
    )
    alerter_tokens: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated bearer tokens accepted on write endpoints (silences).",
    )
    alerter_auth_disabled: bool = Field(
        default=False, description="Accept writes without a token (local experiments only)."
    )
    alerter_stale_seconds: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        description="Figures older than this no longer count (the scorer stopped publishing).",
    )
    alerter_eval_seconds: float = Field(
        default=1.0,
        gt=0,
        le=300,
        description="Evaluate at least this often, and at most once per this interval.",
    )
    alerter_start_lookback_seconds: float = Field(
        default=120.0,
        ge=0,
        description="A first start reads the scores topic from this far back.",
    )
    alerter_delivery_batch: int = Field(
        default=200, ge=1, le=10_000, description="Most deliveries claimed at once."
    )
    alerter_retry_max_seconds: float = Field(
        default=300.0, gt=0, le=86_400, description="Longest wait between delivery attempts."
    )
    alerter_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="A claimed delivery returns to the queue after this if its worker died.",
    )
    alerter_promise_retention_seconds: float = Field(
        default=7 * 86400.0,
        gt=0,
        le=366 * 86400,
        description="A closed promise stays in the promises view (and on gapwatch.promises.v1) "
        "this long after it closed, then the alerter tombstones it on the topic.",
    )
    alerter_max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=64 * 1_048_576,
        description="Largest request body accepted (413 beyond); writes are authenticated "
        "before any of it is read.",
    )
    alerter_page_items: int = Field(
        default=10,
        ge=0,
        le=100,
        description="How many of the most overdue (then at-risk) items a page names.",
    )

    def segment_labels(self) -> tuple[str, ...]:
        return tuple(label.strip() for label in self.scorer_segment_labels.split(",") if label)

    def tokens(self) -> list[bytes]:
        value = self.alerter_tokens.get_secret_value()
        return [t.strip().encode() for t in value.split(",") if t.strip()]

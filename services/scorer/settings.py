"""Scorer settings, from GAPWATCH_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from gapwatch.kafka.settings import KafkaSettings
from gapwatch.settings import TimeBoundSettings


class ScorerSettings(KafkaSettings, TimeBoundSettings):
    """Everything the scorer reads from its environment, each with its default."""

    model_config = SettingsConfigDict(env_prefix="GAPWATCH_", extra="ignore", frozen=True)

    scorer_app_id: str = Field(
        default="gapwatch-scorer",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Consumer group and faust app id; workers with the same id share the work.",
    )
    scorer_instance_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Static group membership (Kafka group.instance.id): a worker restarted "
        "under the same id takes its partitions back at once, not after the session timeout. "
        "Give each worker a stable, unique id (a StatefulSet pod name); a stopped worker's "
        "partitions then move only when its session times out. Unset: dynamic membership.",
    )
    scorer_host: str = Field(default="127.0.0.1", description="Address of the metrics server.")
    scorer_port: int = Field(default=8082, ge=1, le=65535, description="Metrics/health port.")
    scorer_data_dir: Path = Field(
        default=Path(".run/scorer"), description="Where the RocksDB state stores live."
    )
    scorer_policies_file: Path = Field(
        default=Path("deploy/config/policies.yaml"), description="SLA policies and calendars."
    )
    scorer_segment_labels: str = Field(
        default="team,region,priority", description="Comma-separated labels that form a segment."
    )
    scorer_segment_cap: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Most segments per worker; the rest count as `other`. Each segment costs up"
        " to ~920 series on /metrics (bench/series.py): 100 segments ~92k series, ~12 MB.",
    )
    scorer_grace_seconds: float = Field(
        default=3600.0, ge=0, description="How late an event may be before it is dead-lettered."
    )
    scorer_feedback_hold_seconds: float = Field(
        default=30 * 86400.0,
        gt=0,
        description="Feedback still waiting this long (event time) to join its item (never "
        "seen, or never delivered) is dropped and counted in "
        "gapwatch_scorer_feedback_unjoined_total.",
    )
    scorer_on_time_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Gap buckets: a delivery with more than this share of its promised time to "
        "spare is `early`; the rest up to the due time is `on_time` (the baseline of the cost "
        "of lateness).",
    )
    scorer_tick_seconds: float = Field(
        default=0.5, gt=0, le=60, description="How often wall-clock timers are checked."
    )
    scorer_snapshot_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="How often window snapshots are published."
    )
    scorer_windows_lead_seconds: float = Field(
        default=30.0,
        ge=0,
        le=30 * 86400,
        description="How far ahead of the wall clock gap events may pull the rolling windows "
        "(event time running ahead: replays, accelerated simulations); 0 keeps them on the "
        "wall clock.",
    )
    scorer_wall_clock: bool = Field(
        default=True,
        description="Fire due times from the wall clock between events (off: event time only, "
        "as in replay).",
    )
    scorer_batch_events: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="Most input events handled as one batch (a batch is whatever has arrived, "
        "up to this many: it never waits for more while events are waiting).",
    )

    def segment_labels(self) -> tuple[str, ...]:
        return tuple(label.strip() for label in self.scorer_segment_labels.split(",") if label)

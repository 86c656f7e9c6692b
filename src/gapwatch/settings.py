"""Loads pydantic-settings classes and turns a bad value into one clear, named error."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from gapwatch.core.timebound import DEFAULT_MAX_FUTURE_SKEW_SECONDS, not_after

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the environment variable."""

    retriable = False


def env_name(settings_cls: type[BaseSettings], field: str) -> str:
    prefix = settings_cls.model_config.get("env_prefix", "") or ""
    info = settings_cls.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, str):
        return alias
    return f"{prefix}{field}".upper()


def load_settings(settings_cls: type[SettingsT]) -> SettingsT:
    """Read `settings_cls` from the environment, or raise SettingsError naming each bad variable."""
    try:
        return settings_cls()
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            field = str(err["loc"][0]) if err["loc"] else ""
            name = env_name(settings_cls, field) if field else settings_cls.__name__
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(message if not field else f"{name}: {message}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


class TimeBoundSettings(BaseSettings):
    """How far ahead of this process's clock an event's own time may lie (`core.timebound`)."""

    model_config = SettingsConfigDict(env_prefix="GAPWATCH_", extra="ignore", frozen=True)

    max_future_skew_seconds: float = Field(
        default=DEFAULT_MAX_FUTURE_SKEW_SECONDS,
        ge=0,
        le=366 * 24 * 3600,
        description="Events whose own time (CloudEvents `time`, or when the fact occurred) lies "
        "further than this ahead of the receiver's clock are refused: 422 at ingest, a "
        "`from_the_future` dead letter in the scorer. Window snapshots as far ahead are not "
        "evaluated by the alerter. A demo that runs event time faster than the wall clock "
        "raises it.",
    )

    def not_after(self, now: datetime | None = None) -> datetime:
        """The latest event time accepted now (or at `now`)."""
        at = now if now is not None else datetime.now(UTC)
        return not_after(at, self.max_future_skew_seconds)

"""Loads pydantic-settings classes and turns a bad value into one clear, named error."""

from __future__ import annotations

import sys
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


def settings_help(settings_cls: type[BaseSettings], prog: str, summary: str) -> str:
    """What `PROG --help` prints: the summary, then each setting's environment variable, its
    default and what it does (the services take no arguments, only these variables)."""
    lines = [f"usage: {prog}   (no arguments: every setting is an environment variable)", ""]
    lines += [summary, "", "settings:"]
    for field, info in settings_cls.model_fields.items():
        secret = "secret" in str(info.annotation).lower()
        default = info.get_default(call_default_factory=True)
        shown = (
            "(required)"
            if info.is_required()
            else "(unset)"
            if secret or default is None
            else repr(default)
        )
        lines.append(f"  {env_name(settings_cls, field)}  [default: {shown}]")
        if info.description:
            lines.append(f"      {info.description}")
    return "\n".join(lines) + "\n"


def answered(argv: list[str], settings_cls: type[BaseSettings], prog: str, summary: str) -> bool:
    """Answer `--help` (the settings) or `--version` for a service's entry point instead of
    starting it; True if one was answered."""
    if any(arg in ("-h", "--help") for arg in argv):
        sys.stdout.write(settings_help(settings_cls, prog, summary))
        return True
    if "--version" in argv:
        sys.stdout.write(f"{prog} {version()}\n")
        return True
    return False


def version() -> str:
    """gapwatch's version and its compiled engine's, as `--version` prints them."""
    import gapwatch_engine

    import gapwatch

    return f"{gapwatch.__version__} (engine {gapwatch_engine.__version__})"


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

"""Loads pydantic-settings classes and turns a bad value into one clear, named error."""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

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

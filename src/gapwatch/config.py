"""Loads the YAML configuration files (SLA policies, calendars, alert rules) into core models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gapwatch.core.alerts.rules import AlertsConfig
from gapwatch.core.policies import PolicySet
from gapwatch.core.validation import format_path

DEFAULT_POLICIES = Path("deploy/config/policies.yaml")
DEFAULT_ALERTS = Path("deploy/config/alerts.yaml")

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigFileError(Exception):
    """A configuration file is missing, not YAML, or invalid; the message names file and field."""

    retriable = False


def load_policies(path: Path = DEFAULT_POLICIES) -> PolicySet:
    return _load(path, PolicySet)


def load_alerts(path: Path = DEFAULT_ALERTS, segment_labels: tuple[str, ...] = ()) -> AlertsConfig:
    """Alert rules, receivers and routes; with `segment_labels`, rules may only use those."""
    config = _load(path, AlertsConfig)
    problems = config.check_labels(segment_labels) if segment_labels else []
    if problems:
        raise ConfigFileError(f"{path}: " + "; ".join(problems))
    return config


def _load(path: Path, model: type[ModelT]) -> ModelT:
    try:
        document: Any = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML: {exc}") from None
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        problems = [
            f"{_where(document, tuple(e['loc'])) or '<document>'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise ConfigFileError(f"{path}: " + "; ".join(problems)) from None


def _where(document: Any, loc: tuple[Any, ...]) -> str:
    """The error path, with the name of the rule (or receiver) it is in: `rules[2] (slow-x).for`."""
    path = format_path(loc)
    if len(loc) >= 2 and isinstance(loc[1], int) and isinstance(document, dict):
        items = document.get(loc[0])
        if isinstance(items, list) and 0 <= loc[1] < len(items) and isinstance(items[loc[1]], dict):
            name = items[loc[1]].get("name")
            if isinstance(name, str):
                head = format_path(loc[:2])
                return f"{head} ({name}){path[len(head) :]}"
    return path

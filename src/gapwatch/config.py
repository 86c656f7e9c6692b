"""Loads the YAML configuration files (SLA policies and calendars) into validated core models."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from gapwatch.core.policies import PolicySet
from gapwatch.core.validation import format_path

DEFAULT_POLICIES = Path("deploy/config/policies.yaml")


class ConfigFileError(Exception):
    """A configuration file is missing, not YAML, or invalid; the message names file and field."""

    retriable = False


def load_policies(path: Path = DEFAULT_POLICIES) -> PolicySet:
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML: {exc}") from None
    try:
        return PolicySet.model_validate(document)
    except ValidationError as exc:
        problems = [
            f"{format_path(tuple(e['loc'])) or '<document>'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise ConfigFileError(f"{path}: " + "; ".join(problems)) from None

"""Start a scorer worker: `gapwatch-scorer` (settings from GAPWATCH_* variables)."""

from __future__ import annotations

import logging
import sys

import faust

from gapwatch.config import ConfigFileError
from gapwatch.settings import SettingsError, answered, load_settings
from gapwatch_scorer.app import create_app
from gapwatch_scorer.settings import ScorerSettings


def main() -> None:
    if answered(sys.argv[1:], ScorerSettings, "gapwatch-scorer", __doc__ or ""):
        return
    try:
        settings = load_settings(ScorerSettings)
        app = create_app(settings)
    except (SettingsError, ConfigFileError) as exc:
        sys.stderr.write(f"gapwatch-scorer: {exc}\n")
        raise SystemExit(2) from None
    logging.basicConfig(level=logging.INFO)
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()

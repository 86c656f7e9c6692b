"""Start the ingest service: `gapwatch-ingest` (settings from GAPWATCH_* variables)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from gapwatch.settings import SettingsError, load_settings
from gapwatch_ingest.app import create_app
from gapwatch_ingest.settings import IngestSettings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings(IngestSettings)
    except SettingsError as exc:
        sys.stderr.write(f"gapwatch-ingest: {exc}\n")
        raise SystemExit(2) from None
    config = uvicorn.Config(
        create_app(settings),
        host=settings.ingest_host,
        port=settings.ingest_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()

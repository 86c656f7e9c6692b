"""Start the ingest service: `gapwatch-ingest` (settings from GAPWATCH_* variables)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from gapwatch.settings import SettingsError, load_settings
from gapwatch_ingest.app import create_app
from gapwatch_ingest.protocol import bounded_protocol
from gapwatch_ingest.settings import IngestSettings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings(IngestSettings)
    except SettingsError as exc:
        sys.stderr.write(f"gapwatch-ingest: {exc}\n")
        raise SystemExit(2) from None
    app = create_app(settings)
    closed = app.state.metrics.connections_closed
    config = uvicorn.Config(
        app,
        host=settings.ingest_host,
        port=settings.ingest_port,
        loop="uvloop",
        # httptools, with the bounds on slow and oversized requests that uvicorn lacks.
        http=bounded_protocol(
            header_timeout=settings.ingest_header_timeout_seconds,
            max_header_bytes=settings.ingest_max_header_bytes,
            body_timeout=settings.ingest_body_timeout_seconds,
            on_closed=lambda reason: closed.labels(reason).inc(),
        ),
        access_log=False,
        log_level="info",
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()

"""Start the ingest service: `gapwatch-ingest` (settings from GAPWATCH_* variables)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile

from gapwatch.settings import SettingsError, answered, load_settings
from gapwatch_ingest.settings import IngestSettings

log = logging.getLogger("gapwatch_ingest")


def serve(settings: IngestSettings, sock: socket.socket | None = None) -> None:
    """One ingest server: on `sock` when given (a prefork worker), else bound here."""
    import uvicorn

    from gapwatch_ingest.app import EventsFastPath, create_app
    from gapwatch_ingest.protocol import bounded_protocol

    app = create_app(settings, multiprocess=sock is not None)
    closed = app.state.metrics.connections_closed
    config = uvicorn.Config(
        EventsFastPath(app, app.state.events),
        host=settings.ingest_host,
        port=settings.ingest_port,
        loop="uvloop",
        # httptools, with the bounds on slow and oversized requests that uvicorn lacks.
        http=bounded_protocol(
            header_timeout=settings.ingest_header_timeout_seconds,
            max_header_bytes=settings.ingest_max_header_bytes,
            body_timeout=settings.ingest_body_timeout_seconds,
            max_connections=settings.ingest_max_connections,
            on_closed=lambda reason: closed.labels(reason).inc(),
        ),
        access_log=False,
        log_level="info",
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)


def serve_workers(settings: IngestSettings) -> int:
    """`GAPWATCH_INGEST_WORKERS` processes on one socket; /metrics of any sums them all."""
    # prometheus_client picks its multiprocess value store when first imported: set the shared
    # directory before anything imports it. It lives as long as this supervisor.
    metrics_dir = tempfile.mkdtemp(prefix=f"gapwatch-ingest-{os.getpid()}-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from prometheus_client import multiprocess

    from gapwatch_ingest.prefork import serve_prefork

    try:
        sock = socket.create_server((settings.ingest_host, settings.ingest_port), backlog=2048)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.ingest_host, settings.ingest_port, exc)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        return 1
    log.info(
        "ingest on http://%s:%d with %d workers",
        settings.ingest_host,
        settings.ingest_port,
        settings.ingest_workers,
    )
    try:
        return serve_prefork(
            sock,
            settings.ingest_workers,
            lambda shared: serve(settings, shared),
            on_worker_exit=lambda pid: multiprocess.mark_process_dead(pid, metrics_dir),
        )
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def main() -> None:
    if answered(sys.argv[1:], IngestSettings, "gapwatch-ingest", __doc__ or ""):
        return
    try:
        settings = load_settings(IngestSettings)
    except SettingsError as exc:
        sys.stderr.write(f"gapwatch-ingest: {exc}\n")
        raise SystemExit(2) from None
    several = settings.ingest_workers > 1
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s "
        + ("[%(process)d] " if several else "")
        + "%(name)s %(message)s",
    )
    if several:
        raise SystemExit(serve_workers(settings))
    serve(settings)


if __name__ == "__main__":
    main()

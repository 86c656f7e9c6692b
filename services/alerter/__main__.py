"""Start the alerter: `gapwatch-alerter` (settings from GAPWATCH_* variables)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from gapwatch.config import ConfigFileError, load_alerts
from gapwatch.settings import SettingsError, answered, load_settings
from gapwatch_alerter.app import create_app
from gapwatch_alerter.receivers import ReceiverConfigError
from gapwatch_alerter.settings import AlerterSettings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs each request's URL at INFO, and a Slack or webhook URL is itself a credential;
    # failed deliveries are logged by the dispatcher, with secrets redacted.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if answered(sys.argv[1:], AlerterSettings, "gapwatch-alerter", __doc__ or ""):
        return
    try:
        settings = load_settings(AlerterSettings)
        config = load_alerts(settings.alerter_rules_file, settings.segment_labels())
        app = create_app(settings, config)
    except (SettingsError, ConfigFileError, ReceiverConfigError) as exc:
        sys.stderr.write(f"gapwatch-alerter: {exc}\n")
        raise SystemExit(2) from None
    server = uvicorn.Config(
        app,
        host=settings.alerter_host,
        port=settings.alerter_port,
        loop="uvloop",
        access_log=False,
        log_level="info",
    )
    uvicorn.Server(server).run()


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# `make demo`: the whole stack on this machine with a live terminal view (gapwatch demo).
#
# usage: deploy/local/demo.sh [--minutes M] [--rate R]
#
# Starts Kafka, PostgreSQL and Alertmanager if they are not running (`infra.sh up`), installs
# Prometheus from Debian's packages if missing (deploy/local/promtool.sh), then runs
# `gapwatch demo`, which starts ingest, scorer, alerter, Prometheus and the simulator and stops
# them when it ends. Infrastructure this script started is stopped again at the end; what was
# already running is left running. Ctrl-C ends the demo cleanly.
set -uo pipefail

COMPONENT=demo
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

VENV="${GAPWATCH_VENV:-$REPO_ROOT/.venv}"

was_up=0
if bash "$LOCAL_DIR/infra.sh" status >/dev/null 2>&1; then
  was_up=1
fi
bash "$LOCAL_DIR/infra.sh" up || exit $?
log "Prometheus (Debian's prometheus package; installed on first use)"
bash "$LOCAL_DIR/promtool.sh" >/dev/null || exit $?

# Ctrl-C goes to the demo, which stops its children; this script must outlive it to stop the
# infrastructure it started. A handler (not an ignore) so the demo still receives the signal.
trap ':' INT
"$VENV/bin/gapwatch" demo "$@"
rc=$?
if [[ $was_up == 0 ]]; then
  log "stopping the infrastructure this demo started"
  bash "$LOCAL_DIR/infra.sh" down || true
fi
exit "$rc"

#!/usr/bin/env bash
# Local infrastructure for gapwatch: one Kafka broker, one PostgreSQL cluster and one Prometheus
# Alertmanager on 127.0.0.1.
#
# usage: deploy/local/infra.sh up|down|status|env|reset
#
#   up      start Kafka, PostgreSQL and Alertmanager (idempotent), wait until each is ready, write
#           .run/infra.env
#   down    stop them (only the processes named by our pid files); remove .run/infra.env
#   status  report each; exit 0 only if all are running and ready
#   env     print the contents infra.env would have
#   reset   down, then delete Kafka and PostgreSQL data under the run dir (jar cache is kept)
#
# `make infra`, `make infra-down` and `make infra-status` call up, down and status.
# Ports and paths: see deploy/local/README.md.
set -euo pipefail

COMPONENT=infra
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ENV_FILE="$RUN_DIR/infra.env"
AM_DIR="$RUN_DIR/alertmanager"
AM_PORT="${GAPWATCH_ALERTMANAGER_PORT:-19094}"

infra_env() {
  local kafka pg
  kafka="$(bash "$LOCAL_DIR/kafka.sh" bootstrap)"
  pg="$(bash "$LOCAL_DIR/postgres.sh" url)"
  cat <<EOF
# Written by deploy/local/infra.sh up. Plain KEY=value lines: usable by make (include) and bash (source).
GAPWATCH_KAFKA_BOOTSTRAP=$kafka
GAPWATCH_DATABASE_URL=$pg
GAPWATCH_ALERTMANAGER_URL=http://127.0.0.1:$AM_PORT
EOF
}

ensure_gitignored() {
  # The run dir lives in the repo by default; make sure it can never be committed by accident.
  if [[ "$RUN_DIR" == "$REPO_ROOT/.run" && ! -f "$RUN_DIR/.gitignore" ]]; then
    mkdir -p "$RUN_DIR"
    printf '*\n' >"$RUN_DIR/.gitignore"
  fi
}

up() {
  local t0
  t0="$(now_ms)"
  ensure_gitignored
  bash "$LOCAL_DIR/postgres.sh" start
  bash "$LOCAL_DIR/kafka.sh" start
  bash "$LOCAL_DIR/alertmanager.sh" start "$AM_DIR" "$AM_PORT"
  infra_env >"$ENV_FILE.tmp"
  mv "$ENV_FILE.tmp" "$ENV_FILE"
  log "infra up in $(elapsed "$t0"); settings in $ENV_FILE:"
  grep -v '^#' "$ENV_FILE" | sed 's/^/    /' >&2
}

down() {
  local rc=0
  bash "$LOCAL_DIR/alertmanager.sh" stop "$AM_DIR" || rc=1
  bash "$LOCAL_DIR/kafka.sh" stop || rc=1
  bash "$LOCAL_DIR/postgres.sh" stop || rc=1
  rm -f "$ENV_FILE"
  return "$rc"
}

status() {
  local rc=0
  bash "$LOCAL_DIR/kafka.sh" status || rc=1
  bash "$LOCAL_DIR/postgres.sh" status || rc=1
  bash "$LOCAL_DIR/alertmanager.sh" status "$AM_DIR" || rc=1
  if [[ -f "$ENV_FILE" ]]; then
    log "$ENV_FILE:"
    grep -v '^#' "$ENV_FILE" | sed 's/^/    /' >&2
  else
    log "no $ENV_FILE (run: make infra)"
  fi
  return "$rc"
}

reset() {
  down
  log "deleting $RUN_DIR/kafka, $RUN_DIR/postgres and $AM_DIR"
  rm -rf "$RUN_DIR/kafka" "$RUN_DIR/postgres" "$AM_DIR"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) infra_env ;;
  reset) reset ;;
  *) usage ;;
esac

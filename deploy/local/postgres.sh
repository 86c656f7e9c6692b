#!/usr/bin/env bash
# Local throwaway PostgreSQL cluster for gapwatch (its own data dir, never the system cluster).
#
# usage: deploy/local/postgres.sh start|stop|restart|status|url|psql [ARGS...]|paths
#
#   start    install Debian's postgresql if no server binaries exist, initdb (first time), start,
#            wait until ready, ensure role/database gapwatch exist; a no-op when already running
#   stop     pg_ctl stop -m fast (GAPWATCH_PG_STOP_TIMEOUT, default 30s), then immediate, then
#            SIGKILL; a no-op when stopped
#   restart  stop then start (data is kept)
#   status   exit 0 running and accepting queries, 1 running but not answering, 3 not running
#   url      print the client URL (postgresql://gapwatch:gapwatch@127.0.0.1:PORT/gapwatch)
#   psql     run psql against the gapwatch database as gapwatch (extra args are passed on)
#   paths    print where data, logs and the socket live
#
# When run as root, the server runs as the `postgres` OS user (PostgreSQL refuses to run as root);
# otherwise it runs as the calling user.
#
# env: GAPWATCH_PG_PORT (15432), GAPWATCH_PG_BINDIR (newest /usr/lib/postgresql/*/bin),
#      GAPWATCH_PG_START_TIMEOUT (60), GAPWATCH_PG_STOP_TIMEOUT (30), GAPWATCH_RUN_DIR (<repo>/.run)
set -euo pipefail

COMPONENT=postgres
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

HOST=127.0.0.1
PORT="${GAPWATCH_PG_PORT:-15432}"
# Where Debian puts server binaries (one bin/ per major version). Overridable only for testing.
PG_LIB_ROOT="${GAPWATCH_PG_LIB_ROOT:-/usr/lib/postgresql}"
START_TIMEOUT="${GAPWATCH_PG_START_TIMEOUT:-60}"
STOP_TIMEOUT="${GAPWATCH_PG_STOP_TIMEOUT:-30}"
DB_NAME=gapwatch
DB_USER=gapwatch
DB_PASSWORD=gapwatch
URL="postgresql://$DB_USER:$DB_PASSWORD@$HOST:$PORT/$DB_NAME"

PG_DIR="$RUN_DIR/postgres"
DATA_DIR="$PG_DIR/data"
LOG_FILE="$PG_DIR/postgres.log"
SOCK_DIR="$PG_DIR/sock"
# Unix socket paths are limited to 107 bytes; fall back to /tmp for very deep checkouts.
if ((${#SOCK_DIR} + 16 > 100)); then
  SOCK_DIR="/tmp/gapwatch-pg-$(printf '%s' "$PG_DIR" | sha256sum | cut -c1-12)"
fi

if ((EUID == 0)); then
  RUN_AS=postgres
else
  RUN_AS="$(id -un)"
fi

# Do not let a caller's libpq environment redirect our admin/check connections.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS

# --- helpers -------------------------------------------------------------------------------

# as_pg CMD...: run CMD as the cluster owner, from a directory it can read.
as_pg() {
  if ((EUID == 0)); then
    (cd / && runuser -u "$RUN_AS" -- "$@")
  else
    "$@"
  fi
}

find_bindir() {
  if [[ -n "${GAPWATCH_PG_BINDIR:-}" ]]; then
    [[ -x "$GAPWATCH_PG_BINDIR/postgres" ]] || die "GAPWATCH_PG_BINDIR=$GAPWATCH_PG_BINDIR has no postgres binary"
    printf '%s\n' "$GAPWATCH_PG_BINDIR"
    return 0
  fi
  # An existing cluster must be run by the major version that created it.
  if [[ -s "$DATA_DIR/PG_VERSION" ]]; then
    local major
    major="$(<"$DATA_DIR/PG_VERSION")"
    if [[ -x "$PG_LIB_ROOT/$major/bin/postgres" ]]; then
      printf '%s\n' "$PG_LIB_ROOT/$major/bin"
      return 0
    fi
  fi
  local newest
  newest="$(find "$PG_LIB_ROOT" -mindepth 3 -maxdepth 3 -path '*/bin/postgres' -type f 2>/dev/null |
    sort -V | tail -n 1 || true)"
  if [[ -n "$newest" ]]; then
    dirname "$newest"
  fi
  return 0
}

install_postgres() {
  ((EUID == 0)) || die "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin and not root: run 'sudo apt-get install -y postgresql' (or set GAPWATCH_PG_BINDIR)"
  command -v apt-get >/dev/null 2>&1 || die "no PostgreSQL server binaries and no apt-get: install PostgreSQL >= 13 and set GAPWATCH_PG_BINDIR"
  log "no PostgreSQL server binaries found: installing Debian's postgresql package"
  log "(if the package starts its own system cluster on port 5432, it is left alone; ours is separate)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2 || die "apt-get update failed"
  apt-get install -y postgresql >&2 || die "apt-get install -y postgresql failed"
}

# The postmaster PID, if $DATA_DIR/postmaster.pid names a live postgres serving our data dir.
our_pid() {
  local pid
  pid="$(read_pidfile "$DATA_DIR/postmaster.pid")"
  [[ -n "$pid" ]] && pid_alive "$pid" || return 1
  [[ "$(pid_cmdline "$pid")" == *postgres*"$DATA_DIR"* ]] || return 1
  printf '%s\n' "$pid"
}

query_ok() {
  [[ "$("$BINDIR/psql" -X -At -c 'select 1' "$URL" 2>/dev/null)" == "1" ]]
}

provision() {
  # As the superuser over the unix socket (local connections use trust auth).
  as_pg "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK_DIR" -p "$PORT" -U postgres -d postgres \
    <<SQL >/dev/null
SELECT 'CREATE ROLE $DB_USER' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') \gexec
ALTER ROLE $DB_USER WITH LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
SELECT 'CREATE DATABASE $DB_NAME OWNER $DB_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB_NAME') \gexec
SQL
}

prepare_dirs() {
  mkdir -p "$PG_DIR" "$SOCK_DIR"
  if ((EUID == 0)); then
    chown "$RUN_AS:" "$PG_DIR" "$SOCK_DIR"
  fi
  chmod 0700 "$SOCK_DIR"
  as_pg test -w "$PG_DIR" -a -x "$PG_DIR" ||
    die "OS user '$RUN_AS' cannot use $PG_DIR (a parent directory is not traversable?): set GAPWATCH_RUN_DIR to a path it can reach, e.g. /tmp/gapwatch-run"
}

initdb_once() {
  [[ -s "$DATA_DIR/PG_VERSION" ]] && return 0
  local t0
  t0="$(now_ms)"
  log "initdb of a throwaway cluster in $DATA_DIR (owner $RUN_AS, $("$BINDIR/postgres" --version))"
  if ! as_pg "$BINDIR/initdb" -D "$DATA_DIR" -U postgres -E UTF8 --no-locale \
    --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1; then
    show_tail "$PG_DIR/initdb.log"
    die "initdb failed (log: $PG_DIR/initdb.log)"
  fi
  as_pg sh -c "printf '%s\n' \"include_if_exists = 'gapwatch.conf'\" >> '$DATA_DIR/postgresql.conf'"
  log "initdb done in $(elapsed "$t0")"
}

write_conf() {
  as_pg sh -c "cat > '$DATA_DIR/gapwatch.conf'" <<EOF
# Generated by deploy/local/postgres.sh on every start; edit the script, not this file.
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = '$SOCK_DIR'
max_connections = 100
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
}

# --- commands ------------------------------------------------------------------------------

start() {
  with_lock postgres
  local t0 pid
  t0="$(now_ms)"
  BINDIR="$(find_bindir)"
  if [[ -z "$BINDIR" ]]; then
    install_postgres
    BINDIR="$(find_bindir)"
    [[ -n "$BINDIR" ]] || die "postgresql installed but no /usr/lib/postgresql/*/bin/postgres found"
  fi
  if pid="$(our_pid)"; then
    if query_ok; then
      log "already running (pid $pid) on $HOST:$PORT"
      return 0
    fi
    log "running (pid $pid) but '$URL' does not answer; re-provisioning"
  else
    if [[ -f "$DATA_DIR/postmaster.pid" ]]; then
      local old
      old="$(read_pidfile "$DATA_DIR/postmaster.pid")"
      if [[ -n "$old" ]] && ! wait_unzombie "$old" 15; then
        die "previous postmaster (pid $old) is still a zombie; try again shortly"
      fi
      log "removing stale $DATA_DIR/postmaster.pid (previous server died without cleaning up)"
      rm -f "$DATA_DIR/postmaster.pid"
    fi
    if port_in_use "$PORT"; then
      die "port $HOST:$PORT is already in use by another process (not our cluster); set GAPWATCH_PG_PORT"
    fi
    prepare_dirs
    initdb_once
    write_conf
    log "starting PostgreSQL ($BINDIR) on $HOST:$PORT, log $LOG_FILE"
    if ! as_pg "$BINDIR/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -w -t "$START_TIMEOUT" start \
      >"$PG_DIR/pg_ctl.out" 2>&1 9>&-; then
      cat "$PG_DIR/pg_ctl.out" >&2
      show_tail "$LOG_FILE" 40
      die "pg_ctl start failed (log: $LOG_FILE)"
    fi
    pid="$(our_pid)" || die "pg_ctl reported success but no postmaster serves $DATA_DIR"
  fi
  if ! "$BINDIR/pg_isready" -q -h "$HOST" -p "$PORT" -t "$START_TIMEOUT"; then
    show_tail "$LOG_FILE" 40
    die "pg_isready: server on $HOST:$PORT is not accepting connections"
  fi
  provision || {
    show_tail "$LOG_FILE" 20
    die "could not create role/database $DB_USER/$DB_NAME"
  }
  local out
  if ! out="$("$BINDIR/psql" -X -At -c 'select 1' "$URL" 2>&1)" || [[ "$out" != "1" ]]; then
    show_tail "$LOG_FILE" 20
    die "'psql $URL -c \"select 1\"' failed: $out"
  fi
  log "ready on $HOST:$PORT (pid $pid), database $DB_NAME, after $(elapsed "$t0")"
}

stop() {
  with_lock postgres
  local pid
  if ! pid="$(our_pid)"; then
    if [[ -f "$DATA_DIR/postmaster.pid" ]]; then
      log "not running; removing stale $DATA_DIR/postmaster.pid"
      rm -f "$DATA_DIR/postmaster.pid"
    else
      log "not running"
    fi
    return 0
  fi
  BINDIR="$(find_bindir)"
  local t0
  t0="$(now_ms)"
  log "stopping (pid $pid, fast shutdown, up to ${STOP_TIMEOUT}s)"
  if ! as_pg "$BINDIR/pg_ctl" -D "$DATA_DIR" -m fast -w -t "$STOP_TIMEOUT" stop >/dev/null 2>&1; then
    log "fast shutdown timed out: immediate shutdown"
    as_pg "$BINDIR/pg_ctl" -D "$DATA_DIR" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
    if pid_alive "$pid"; then
      stop_pid "$pid" 5 "postmaster"
    fi
  fi
  wait_pid_exit "$pid" 10 || die "postmaster (pid $pid) did not exit"
  log "stopped (pid $pid) in $(elapsed "$t0")"
}

status() {
  local pid
  if pid="$(our_pid)"; then
    BINDIR="$(find_bindir)"
    if query_ok; then
      log "running (pid $pid) on $HOST:$PORT, $URL answers"
      return 0
    fi
    log "running (pid $pid) but $URL does not answer"
    return 1
  fi
  log "not running (would listen on $HOST:$PORT)"
  return 3
}

paths() {
  cat <<EOF
data:      $DATA_DIR (postgresql.conf includes gapwatch.conf)
log:       $LOG_FILE
socket:    $SOCK_DIR
pid file:  $DATA_DIR/postmaster.pid
binaries:  $(find_bindir)
EOF
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

BINDIR=""
case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart)
    (stop)
    start
    ;;
  status) status ;;
  url) printf '%s\n' "$URL" ;;
  psql)
    shift
    BINDIR="$(find_bindir)"
    [[ -n "$BINDIR" ]] || die "no PostgreSQL binaries found"
    exec "$BINDIR/psql" -X "$URL" "$@"
    ;;
  paths) paths ;;
  *) usage ;;
esac

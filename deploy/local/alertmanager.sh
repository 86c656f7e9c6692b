#!/usr/bin/env bash
# A throwaway Prometheus Alertmanager on 127.0.0.1 (its own dir and port, never a system service).
#
# usage: deploy/local/alertmanager.sh install|binary|start DIR PORT|stop DIR|status DIR
#
#   install  install Debian's prometheus-alertmanager when no alertmanager binary exists
#   binary   print the binary's path (installing it first if needed); logs go to stderr
#   start    write a minimal config to DIR/alertmanager.yml, start alertmanager on 127.0.0.1:PORT
#            (storage DIR/data, log DIR/alertmanager.log, pid DIR/alertmanager.pid, clustering
#            off) and wait until GET /-/ready answers 200; a no-op when already running there
#   stop     SIGTERM (then SIGKILL after GAPWATCH_ALERTMANAGER_STOP_TIMEOUT, 15s) the pid in
#            DIR/alertmanager.pid, and only if that process is alertmanager serving DIR
#   status   exit 0 running and ready, 1 running but not ready, 3 not running
#
# Install: the package's maintainer scripts would start (via invoke-rc.d / deb-systemd-invoke)
# and enable the system `prometheus-alertmanager` service. Starting is prevented with a temporary
# /usr/sbin/policy-rc.d that denies every start (only when no policy-rc.d exists; a pre-existing
# one is left as it is). Enabling is undone with the package's own unit only, if the install
# enabled it. As a last guard, a system alertmanager that appeared during the install is stopped.
# Installs are serialised by a lock (.run/alertmanager.lock) and wait for the dpkg lock.
#
# env: GAPWATCH_ALERTMANAGER (path to an alertmanager binary to use as is),
#      GAPWATCH_ALERTMANAGER_START_TIMEOUT (30), GAPWATCH_ALERTMANAGER_STOP_TIMEOUT (15),
#      GAPWATCH_RUN_DIR (<repo>/.run)
set -euo pipefail

COMPONENT=alertmanager
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PACKAGE=prometheus-alertmanager
UNIT="$PACKAGE.service"
HOST=127.0.0.1
START_TIMEOUT="${GAPWATCH_ALERTMANAGER_START_TIMEOUT:-30}"
STOP_TIMEOUT="${GAPWATCH_ALERTMANAGER_STOP_TIMEOUT:-15}"
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_MARK="# gapwatch deploy/local/alertmanager.sh: temporary, deny service starts during install"

# --- install -------------------------------------------------------------------------------

# found: print the path of an existing, runnable alertmanager; false if there is none.
# Debian names the binary prometheus-alertmanager; upstream tarballs name it alertmanager.
found() {
  local path
  for path in "$(command -v alertmanager || true)" "$(command -v prometheus-alertmanager || true)" \
    /usr/bin/prometheus-alertmanager; do
    if [[ -n "$path" && -x "$path" ]] && "$path" --version >/dev/null 2>&1; then
      printf '%s\n' "$path"
      return 0
    fi
  done
  return 1
}

systemd_running() { [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; }

# unit_enabled: true if the package's unit is enabled (works with or without a running systemd).
unit_enabled() {
  command -v systemctl >/dev/null 2>&1 || return 1
  [[ "$(systemctl is-enabled "$UNIT" 2>/dev/null || true)" == enabled ]]
}

# system_pids: PIDs of running packaged alertmanagers, sorted for comm(1). The kernel's process
# name stops at 15 characters, so match the command line; instances this script starts always
# pass --cluster.listen-address= and are never counted.
system_pids() {
  local pid
  for pid in $(pgrep -f '^/usr/bin/prometheus-alertmanager' 2>/dev/null || true); do
    [[ "$(pid_cmdline "$pid")" == *"--cluster.listen-address= "* ]] || printf '%s\n' "$pid"
  done | sort
}

# deny_service_starts: install a policy-rc.d that makes invoke-rc.d and deb-systemd-invoke skip
# every start, unless the machine already has one (then it is the administrator's to keep).
deny_service_starts() {
  if [[ -e "$POLICY_RC" ]]; then
    log "$POLICY_RC exists: left as it is (a system alertmanager started anyway is stopped after)"
    return 0
  fi
  printf '#!/bin/sh\n%s\nexit 101\n' "$POLICY_MARK" >"$POLICY_RC"
  chmod 0755 "$POLICY_RC"
  trap allow_service_starts EXIT
  trap 'allow_service_starts; exit 130' INT TERM HUP
}

allow_service_starts() {
  if [[ -f "$POLICY_RC" ]] && grep -qF "$POLICY_MARK" "$POLICY_RC"; then
    rm -f "$POLICY_RC"
  fi
}

install_package() {
  ((EUID == 0)) || die "alertmanager not found and not root: run 'sudo apt-get install --no-install-recommends $PACKAGE' or set GAPWATCH_ALERTMANAGER"
  command -v apt-get >/dev/null 2>&1 || die "alertmanager not found and no apt-get: install Prometheus Alertmanager and set GAPWATCH_ALERTMANAGER"
  export DEBIAN_FRONTEND=noninteractive

  apt-get update -qq >&2 || die "apt-get update failed"
  local candidate
  candidate="$(apt-cache policy "$PACKAGE" | awk '/Candidate:/ {print $2}')"
  if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
    die "Debian package '$PACKAGE' is not available from the configured apt sources"
  fi

  local enabled_before=no unit_before="" pids_before t0
  unit_enabled && enabled_before=yes
  if systemd_running; then
    unit_before="$(systemctl is-active "$UNIT" 2>/dev/null || true)"
  fi
  pids_before="$(system_pids)"

  deny_service_starts
  log "alertmanager not found: installing Debian's $PACKAGE $candidate (--no-install-recommends, service starts denied)"
  t0="$(now_ms)"
  apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "$PACKAGE" >&2 ||
    die "apt-get install $PACKAGE failed"
  allow_service_starts
  log "installed $PACKAGE in $(elapsed "$t0")"

  undo_service "$enabled_before" "$unit_before" "$pids_before"
}

# undo_service ENABLED_BEFORE UNIT_STATE_BEFORE PIDS_BEFORE: the package's unit goes back to how
# it was: not enabled, not running (unless it already was before the install).
undo_service() {
  local enabled_before="$1" unit_before="$2" pids_before="$3" pid
  if systemd_running && [[ "$unit_before" != active ]] &&
    [[ "$(systemctl is-active "$UNIT" 2>/dev/null || true)" == active ]]; then
    log "the install started $UNIT: stopping it"
    systemctl stop "$UNIT" >&2 || die "systemctl stop $UNIT failed"
  fi
  if [[ "$enabled_before" == no ]] && unit_enabled; then
    log "the install enabled $UNIT: disabling it (gapwatch runs its own alertmanager)"
    systemctl disable "$UNIT" >/dev/null 2>&1 || log "systemctl disable $UNIT failed (left enabled)"
  fi
  # Without systemd (containers) an init script may have started a daemon if policy-rc.d allowed
  # it: stop only PIDs that appeared during the install and really are the packaged binary.
  for pid in $(comm -13 <(printf '%s\n' "$pids_before") <(system_pids)); do
    stop_pid "$pid" 15 "system alertmanager started by the package install"
  done
}

# binary: print the alertmanager to use, installing it first if there is none.
binary() {
  local path
  if [[ -n "${GAPWATCH_ALERTMANAGER:-}" ]]; then
    [[ -x "$GAPWATCH_ALERTMANAGER" ]] || die "GAPWATCH_ALERTMANAGER=$GAPWATCH_ALERTMANAGER is not an executable file"
    printf '%s\n' "$GAPWATCH_ALERTMANAGER"
    return 0
  fi
  if path="$(found)"; then
    printf '%s\n' "$path"
    return 0
  fi
  with_lock alertmanager
  # Another caller may have installed it while we waited for the lock.
  if ! path="$(found)"; then
    install_package
    path="$(found)" || die "installed $PACKAGE but no runnable alertmanager on PATH or in /usr/bin"
    log "using $path ($("$path" --version 2>&1 | head -n 1))"
  fi
  exec 9>&-
  printf '%s\n' "$path"
}

# --- one instance in DIR -------------------------------------------------------------------

# set_instance DIR: paths of the instance kept in DIR (made absolute).
set_instance() {
  [[ -n "${1:-}" ]] || usage
  mkdir -p "$1"
  DIR="$(cd "$1" && pwd)"
  CONFIG="$DIR/alertmanager.yml"
  DATA_DIR="$DIR/data"
  LOG_FILE="$DIR/alertmanager.log"
  PIDFILE="$DIR/alertmanager.pid"
}

# lock_instance: serialise start/stop of one DIR (fd 8; fd 9 is the install lock).
lock_instance() {
  exec 8>"$DIR/alertmanager.lock"
  flock -w 60 8 || die "timed out waiting for lock $DIR/alertmanager.lock"
}

# our_pid: the PID in the pid file, if that process is alertmanager with our config (guards
# against reused PIDs).
our_pid() {
  local pid
  pid="$(read_pidfile "$PIDFILE")"
  [[ -n "$pid" ]] && pid_alive "$pid" || return 1
  [[ "$(pid_cmdline "$pid")" == *alertmanager*"--config.file=$CONFIG"* ]] || return 1
  printf '%s\n' "$pid"
}

# http_status PORT PATH: the status code of GET http://127.0.0.1:PORT/PATH ("" if no answer).
# Plain bash (/dev/tcp), so a fresh machine needs no curl.
http_status() {
  # shellcheck disable=SC2016 # expanded by the inner bash, from its positional arguments
  timeout 3 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "GET %s HTTP/1.0\r\nHost: %s:%s\r\nConnection: close\r\n\r\n" "$2" "$0" "$1" >&3
    read -r _ code _ <&3 && printf "%s\n" "$code"
  ' "$HOST" "$1" "$2" 2>/dev/null || true
}

ready() { [[ "$(http_status "$1" /-/ready)" == 200 ]]; }

# listen_port PID: the port in the process's --web.listen-address.
listen_port() { pid_cmdline "$1" | sed -n 's/.*--web\.listen-address=[^ ]*:\([0-9]*\).*/\1/p'; }

write_config() {
  cat >"$CONFIG" <<'EOF'
# Generated by deploy/local/alertmanager.sh on every start; edit the script, not this file.
# Every alert goes to a receiver that notifies nobody: gapwatch's tests read alerts back through
# the v2 API. Short group timings keep notification-pipeline state quick to settle.
route:
  receiver: blackhole
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: blackhole
EOF
}

start() {
  set_instance "${1:-}"
  local port="${2:-}"
  if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    die "start needs DIR PORT (got port '$port')"
  fi
  local bin t0 pid
  bin="$(binary)"
  lock_instance
  t0="$(now_ms)"
  if pid="$(our_pid)"; then
    local running_port
    running_port="$(listen_port "$pid")"
    [[ "$running_port" == "$port" ]] || die "already running in $DIR (pid $pid) on port $running_port, not $port: stop it first"
    if ready "$port"; then
      log "already running (pid $pid) on $HOST:$port"
      return 0
    fi
    log "running (pid $pid) on $HOST:$port but not ready yet; waiting"
  else
    if [[ -f "$PIDFILE" ]]; then
      log "removing stale pid file $PIDFILE"
      rm -f "$PIDFILE"
    fi
    if port_in_use "$port"; then
      die "port $HOST:$port is already in use by another process (no live alertmanager of $DIR)"
    fi
    mkdir -p "$DATA_DIR"
    write_config
    "$bin" --version >/dev/null 2>&1 || die "$bin --version failed"
    printf '\n===== %s start on %s:%s =====\n' "$(date -Is)" "$HOST" "$port" >>"$LOG_FILE"
    # setsid: own session, so a Ctrl-C in the calling terminal does not reach it.
    # 8>&- 9>&-: do not leak the lock fds into the long-lived process.
    # --cluster.listen-address= (empty) turns gossip off: one instance, no port 9094.
    (cd "$DIR" && exec setsid "$bin" \
      --config.file="$CONFIG" \
      --storage.path="$DATA_DIR" \
      --web.listen-address="$HOST:$port" \
      --cluster.listen-address= \
      --log.level=info) \
      </dev/null >>"$LOG_FILE" 2>&1 8>&- 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$PIDFILE"
    log "starting $bin (pid $pid) on $HOST:$port, dir $DIR"
  fi
  local deadline=$((SECONDS + START_TIMEOUT))
  until ready "$port"; do
    if ! pid_alive "$pid"; then
      show_tail "$LOG_FILE" 40
      rm -f "$PIDFILE"
      die "alertmanager exited during start (log: $LOG_FILE)"
    fi
    if ((SECONDS >= deadline)); then
      show_tail "$LOG_FILE" 40
      stop_pid "$pid" "$STOP_TIMEOUT" "alertmanager (not ready)"
      rm -f "$PIDFILE"
      die "GET http://$HOST:$port/-/ready did not answer 200 within ${START_TIMEOUT}s"
    fi
    sleep 0.2
  done
  log "ready on http://$HOST:$port (pid $pid) after $(elapsed "$t0")"
}

stop() {
  set_instance "${1:-}"
  lock_instance
  local pid t0
  if pid="$(our_pid)"; then
    t0="$(now_ms)"
    stop_pid "$pid" "$STOP_TIMEOUT" "alertmanager"
    rm -f "$PIDFILE"
    log "stopped (pid $pid) in $(elapsed "$t0")"
  elif [[ -f "$PIDFILE" ]]; then
    log "not running; removing stale pid file $PIDFILE (its pid is not our alertmanager: not signalled)"
    rm -f "$PIDFILE"
  else
    log "not running"
  fi
}

status() {
  set_instance "${1:-}"
  local pid port
  if pid="$(our_pid)"; then
    port="$(listen_port "$pid")"
    if ready "$port"; then
      log "running (pid $pid) on $HOST:$port, ready"
      return 0
    fi
    log "running (pid $pid) on $HOST:$port, not ready"
    return 1
  fi
  log "not running in $DIR"
  return 3
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

case "${1:-}" in
  install) binary >/dev/null ;;
  binary) binary ;;
  start)
    (($# == 3)) || usage
    start "$2" "$3"
    ;;
  stop)
    (($# == 2)) || usage
    stop "$2"
    ;;
  status)
    (($# == 2)) || usage
    status "$2"
    ;;
  *) usage ;;
esac

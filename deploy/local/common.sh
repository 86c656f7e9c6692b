# shellcheck shell=bash
# Shared helpers for deploy/local/{infra,kafka,postgres}.sh. Source it; do not run it.

LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$LOCAL_DIR/../.." && pwd)"
RUN_DIR="${GAPWATCH_RUN_DIR:-$REPO_ROOT/.run}"
CACHE_DIR="${GAPWATCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gapwatch}"
export LOCAL_DIR REPO_ROOT RUN_DIR CACHE_DIR

# Component name used as a log prefix; each script sets it.
COMPONENT="${COMPONENT:-infra}"

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "$COMPONENT" "$*" >&2; }
die() {
  printf '[%s %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$COMPONENT" "$*" >&2
  exit 1
}

# now_ms: wall clock in milliseconds (for timings).
now_ms() { date +%s%3N; }

# elapsed SINCE_MS -> "1.234s"
elapsed() {
  local ms=$(($(now_ms) - $1))
  printf '%d.%03ds' $((ms / 1000)) $((ms % 1000))
}

# pid_alive PID: true if a process with that PID exists.
pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# pid_cmdline PID: the process's command line, NULs turned into spaces ("" if gone).
pid_cmdline() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }

# read_pidfile FILE: prints the PID stored in FILE if it is a number, else nothing.
read_pidfile() {
  local pid=""
  if [[ -f "$1" ]]; then
    read -r pid <"$1" || true
  fi
  [[ "$pid" =~ ^[0-9]+$ ]] && printf '%s\n' "$pid"
  return 0
}

# port_in_use PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_pid_exit PID TIMEOUT_SECONDS: true if the process exited within the timeout.
wait_pid_exit() {
  local pid="$1" deadline=$((SECONDS + $2))
  while pid_alive "$pid"; do
    # A zombie child of ours counts as exited.
    if [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == "Z" ]]; then
      return 0
    fi
    ((SECONDS >= deadline)) && return 1
    sleep 0.2
  done
  return 0
}

# wait_unzombie PID TIMEOUT_SECONDS: a killed daemon stays a zombie until init reaps it, and
# PostgreSQL's lock-file check treats a zombie PID as alive; wait for the zombie to go away.
wait_unzombie() {
  local pid="$1" deadline=$((SECONDS + $2))
  while [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == "Z" ]]; do
    ((SECONDS >= deadline)) && return 1
    sleep 0.2
  done
  return 0
}

# stop_pid PID TIMEOUT_SECONDS WHAT: SIGTERM, wait, SIGKILL after the timeout, wait again.
stop_pid() {
  local pid="$1" timeout="$2" what="$3"
  pid_alive "$pid" || return 0
  log "stopping $what (pid $pid, SIGTERM, up to ${timeout}s)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_pid_exit "$pid" "$timeout"; then
    log "$what (pid $pid) still running after ${timeout}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_pid_exit "$pid" 10 || die "$what (pid $pid) survived SIGKILL"
  fi
}

# with_lock NAME: take an exclusive lock (fd 9) on $RUN_DIR/NAME.lock for the rest of the script,
# so concurrent `start`/`stop` calls serialise instead of racing.
with_lock() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/$1.lock"
  if ! flock -w 300 9; then
    die "timed out waiting for lock $RUN_DIR/$1.lock"
  fi
}

# show_tail FILE [N]: print the last N lines of FILE (for failure diagnostics).
show_tail() {
  local file="$1" n="${2:-40}"
  if [[ -s "$file" ]]; then
    printf -- '----- last %s lines of %s -----\n' "$n" "$file" >&2
    tail -n "$n" "$file" >&2
    printf -- '----- end of %s -----\n' "$file" >&2
  else
    printf -- '(%s is empty or missing)\n' "$file" >&2
  fi
}

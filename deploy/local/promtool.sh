#!/usr/bin/env bash
# Print the path of a usable `promtool` (checks Prometheus metric exposition), installing it first.
#
# usage: deploy/local/promtool.sh        # stdout: the binary's path; logs go to stderr
#
# Order: $GAPWATCH_PROMTOOL if set, else `promtool` on PATH, else /usr/bin/promtool, else (as root
# with apt-get) Debian's `prometheus` package, which ships /usr/bin/promtool. Installs are
# serialised by a lock (.run/promtool.lock), so parallel test runs do not fight over dpkg.
#
# The package's maintainer scripts may start (and, under systemd, enable) a system Prometheus
# server. gapwatch wants only the CLI, so a server that the install itself started is stopped
# again (and disabled under systemd); one that was running before is left alone.
#
# env: GAPWATCH_PROMTOOL (path to a promtool to use as is), GAPWATCH_RUN_DIR (<repo>/.run)
set -euo pipefail

COMPONENT=promtool
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PACKAGE=prometheus

# found: print the path of an existing, runnable promtool; false if there is none.
found() {
  local path
  for path in "$(command -v promtool || true)" /usr/bin/promtool; do
    if [[ -n "$path" && -x "$path" ]] && "$path" --version >/dev/null 2>&1; then
      printf '%s\n' "$path"
      return 0
    fi
  done
  return 1
}

systemd_running() { [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; }

# server_pids: PIDs of running Prometheus servers (exact process name), sorted for comm(1).
server_pids() { pgrep -x prometheus 2>/dev/null | sort || true; }

# can_install: stop with what to do by hand unless we can install the package ourselves.
can_install() {
  ((EUID == 0)) || die "promtool not found and not root: run 'sudo apt-get install --no-install-recommends $PACKAGE' or set GAPWATCH_PROMTOOL to a promtool binary"
  command -v apt-get >/dev/null 2>&1 || die "promtool not found and no apt-get: install Prometheus' promtool and set GAPWATCH_PROMTOOL"
}

install_package() {
  export DEBIAN_FRONTEND=noninteractive

  apt-get update -qq >&2 || die "apt-get update failed"
  local candidate
  candidate="$(apt-cache policy "$PACKAGE" | awk '/Candidate:/ {print $2}')"
  if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
    die "Debian package '$PACKAGE' (which ships promtool) is not available from the configured apt sources"
  fi

  local unit_before="" pids_before t0
  if systemd_running; then
    unit_before="$(systemctl is-active "$PACKAGE" 2>/dev/null || true)"
  fi
  pids_before="$(server_pids)"

  log "promtool not found: installing Debian's $PACKAGE $candidate (--no-install-recommends)"
  t0="$(now_ms)"
  apt-get install -y -qq --no-install-recommends "$PACKAGE" >&2 ||
    die "apt-get install $PACKAGE failed"
  log "installed $PACKAGE in $(elapsed "$t0")"

  stop_started_server "$unit_before" "$pids_before"
}

# stop_started_server UNIT_STATE_BEFORE PIDS_BEFORE: undo a server start done by the install.
stop_started_server() {
  local unit_before="$1" pids_before="$2" pid
  if systemd_running && [[ "$unit_before" != "active" ]]; then
    if [[ "$(systemctl is-active "$PACKAGE" 2>/dev/null || true)" == "active" ]]; then
      log "the $PACKAGE package started the system prometheus service: stopping and disabling it"
      systemctl stop "$PACKAGE" >&2 || die "systemctl stop $PACKAGE failed"
      systemctl disable "$PACKAGE" >&2 || log "systemctl disable $PACKAGE failed (left enabled)"
    fi
  fi
  # Without systemd (containers), the init script may have started a daemon: stop only PIDs that
  # appeared during the install and really are /usr/bin/prometheus.
  for pid in $(comm -13 <(printf '%s\n' "$pids_before") <(server_pids)); do
    if [[ "$(pid_cmdline "$pid")" == /usr/bin/prometheus* ]]; then
      stop_pid "$pid" 15 "system prometheus started by the package install"
    fi
  done
}

if [[ -n "${GAPWATCH_PROMTOOL:-}" ]]; then
  [[ -x "$GAPWATCH_PROMTOOL" ]] || die "GAPWATCH_PROMTOOL=$GAPWATCH_PROMTOOL is not an executable file"
  printf '%s\n' "$GAPWATCH_PROMTOOL"
  exit 0
fi
if path="$(found)"; then
  printf '%s\n' "$path"
  exit 0
fi

can_install
with_lock promtool
# Another caller may have installed it while we waited for the lock.
if ! path="$(found)"; then
  install_package
  path="$(found)" || die "installed $PACKAGE but no runnable promtool on PATH or in /usr/bin"
  log "using $path ($("$path" --version 2>&1 | head -n 1))"
fi
printf '%s\n' "$path"

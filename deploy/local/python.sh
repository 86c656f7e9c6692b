#!/usr/bin/env bash
# Creates the project virtualenv and installs gapwatch with its dev dependencies.
# usage: deploy/local/python.sh PYTHON VENV_DIR
set -euo pipefail
python="${1:-python3}"
venv="${2:-.venv}"

command -v "$python" >/dev/null 2>&1 || { echo "python.sh: $python not found (need Python >= 3.11)" >&2; exit 1; }
"$python" - <<'PY' || { echo "python.sh: gapwatch needs Python >= 3.11" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

if [[ ! -x "$venv/bin/python" ]]; then
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian's python3 ships venv/ensurepip separately.
    rm -rf "$venv"
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
      echo "python.sh: installing python3-venv" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$python" -m venv "$venv"
    else
      echo "python.sh: '$python -m venv' failed; install python3-venv" >&2; exit 1
    fi
  fi
fi
"$venv/bin/python" -m pip install -q --upgrade pip

# The compiled engine (engine/, Rust + PyO3) is built with the cargo on PATH; where there is
# none, with Debian's packaged one. Its minimum Rust is engine/Cargo.toml's rust-version.
need_rust=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' engine/Cargo.toml)
if ! command -v cargo >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "python.sh: no cargo on PATH; installing Debian's cargo and rustc" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cargo rustc >/dev/null
  else
    echo "python.sh: the engine needs Rust >= $need_rust (cargo on PATH): see https://rustup.rs" >&2; exit 1
  fi
fi
have_rust=$(rustc --version | awk '{print $2}')
if [[ $(printf '%s\n%s\n' "$need_rust" "$have_rust" | sort -V | head -1) != "$need_rust" ]]; then
  echo "python.sh: rustc $have_rust is older than the engine's minimum $need_rust;" \
       "install a newer one (rustup, or Debian trixie's cargo) and run make again" >&2
  exit 1
fi
started=$SECONDS
"$venv/bin/python" -m pip install -q ./engine
echo "python.sh: engine built in $((SECONDS - started)) s (rustc $have_rust)" >&2
"$venv/bin/python" -m pip install -q -e '.[dev]'
echo "python.sh: $venv ready ($("$venv/bin/python" --version))" >&2

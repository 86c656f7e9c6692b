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
"$venv/bin/python" -m pip install -q -e '.[dev]'
echo "python.sh: $venv ready ($("$venv/bin/python" --version))" >&2

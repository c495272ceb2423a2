#!/usr/bin/env bash
# Create/refresh the project's Python 3.12 virtualenv (.venv) idempotently.
# Skips work already done: the install is redone only when pyproject.toml or this script changes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

find_python312() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return 0; fi
  if command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'import sys' >/dev/null 2>&1; then
    command -v python3.12; return 0
  fi
  if command -v pyenv >/dev/null 2>&1; then
    for p in "$(pyenv root)"/versions/3.12*/bin/python3.12; do
      [ -x "$p" ] && { echo "$p"; return 0; }
    done
  fi
  for p in /usr/bin/python3.12 /usr/local/bin/python3.12; do
    [ -x "$p" ] && { echo "$p"; return 0; }
  done
  return 1
}

stamp="$VENV/.vla_isaac_installed"
want=$(cat pyproject.toml tools/bootstrap_venv.sh | sha256sum | cut -c1-16)
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  PY=$(find_python312) || {
    echo "error: Python 3.12 not found (Isaac Lab 3.0 needs it). Install it (e.g. 'pyenv install 3.12' or 'apt-get install python3.12 python3.12-venv') or set PYTHON=/path/to/python3.12." >&2
    exit 1
  }
  echo "[bootstrap] creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
echo "[bootstrap] installing vla-isaac (isaaclab==3.0.0 and friends; first time takes ~3 min, ~8 GB)"
"$VENV/bin/python" -m pip install -q --upgrade pip
# the lerobot extra too, so make test covers the LeRobot export and evaluation (docs/lerobot.md)
"$VENV/bin/python" -m pip install -q -e ".[dev,lerobot]"
# openpi-client (tests drive our policy server with its real WebsocketClientPolicy) declares numpy<2,
# which Isaac Lab 3.0 cannot use; its websocket client needs only websockets + msgpack (installed above).
numpy_before=$("$VENV/bin/python" -c 'import numpy; print(numpy.__version__)')
"$VENV/bin/python" -m pip install -q --no-deps openpi-client==0.1.2
numpy_after=$("$VENV/bin/python" -c 'import numpy; print(numpy.__version__)')
if [ "$numpy_before" != "$numpy_after" ]; then
  echo "error: installing openpi-client changed numpy $numpy_before -> $numpy_after; reinstall with: $VENV/bin/python -m pip install numpy==$numpy_before" >&2
  exit 1
fi
echo "$want" > "$stamp"
echo "[bootstrap] done"

#!/usr/bin/env bash
# One-step, idempotent set-up of a virtual environment for recbole-mkg (Python 3.11 or 3.12).
#   bash scripts/setup_env.sh            -> creates ./.venv (or $MKG_VENV) and installs everything
# Re-running is cheap: it skips the install when requirements, constraints and setup.py are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MKG_VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
stamp_src=$(cat requirements.txt constraints.txt setup.py | sha256sum | cut -d' ' -f1)
if [ -f "$VENV/.mkg_stamp" ] && [ "$(cat "$VENV/.mkg_stamp")" = "$stamp_src" ]; then
  exit 0
fi
"$VPY" -m pip install -q --upgrade pip
# 1. torch (+torchvision, needed by open_clip): the exact versions of constraints.txt.
#    On this kind of machine pip takes them from local disk; elsewhere from PyPI.
"$VPY" -m pip install -q -c constraints.txt torch torchvision
# 2. everything else except recbole, pinned to the versions the tests passed on.
"$VPY" -m pip install -q -c constraints.txt -r requirements.txt
# 3. recbole itself without its stale pins (ray<=2.6.3, colorlog==4.7.2, colorama==0.4.4).
"$VPY" -m pip install -q --no-deps "recbole==1.2.1"
# 4. the plugin, editable.
"$VPY" -m pip install -q --no-deps -e .
echo "$stamp_src" > "$VENV/.mkg_stamp"

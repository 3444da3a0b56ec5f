#!/usr/bin/env bash
# One prepared check of the project on the lent GPU machine (steps: scripts/gpu_check.py).
# That machine has Python 3.12 with torch but no network and not the project's versions of
# transformers & co.: the wheels scripts/gpu_wheels.sh downloaded into .whl/ (carried there
# beside the working tree) are installed into a folder of their own, put ahead of the
# machine's packages on PYTHONPATH, and the project runs from the working tree (not
# installed). Where there is no GPU every GPU step is skipped and the run exits 0.
#
# Usage: scripts/gpu_check.sh [OUT_DIR] [gpu_check.py options, e.g. --device cpu]
#   OUT_DIR   gpu_check.json (and service.log, training.log); default $OUT, else .cache/gpu-check
#   PYTHON    the interpreter; default python3 where it has torch, else the project's venv
#   GPU_CHECK_TIMEOUT_S   the whole check's limit (default 330: under 6 minutes with the install)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT_DIR=${1:-${OUT:-.cache/gpu-check}}
if [ $# -gt 0 ]; then
    shift
fi
SITE=${GPU_CHECK_SITE:-/tmp/cir-site}
LIMIT=${GPU_CHECK_TIMEOUT_S:-330}

if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif python3 -c 'import importlib.util, sys; sys.exit(not importlib.util.find_spec("torch"))' \
    2>/dev/null; then
    PY=python3
else
    PY=$ROOT/.venv/bin/python  # this repository's machines: torch lives in the venv
fi

PYPATH=$ROOT
if compgen -G ".whl/*.whl" >/dev/null; then
    # The wheels are cp312 builds (scripts/gpu_wheels.sh): another Python keeps its own.
    if "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
        echo "installing $(compgen -G '.whl/*.whl' | wc -l) wheels from .whl/ into $SITE"
        PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q --disable-pip-version-check \
            --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
        PYPATH=$SITE:$ROOT
    else
        echo ".whl/ holds Python 3.12 wheels; $("$PY" -V 2>&1) uses its own packages"
    fi
fi

# Nothing can be fetched there: every model is a local folder, so never ask the hub.
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}
export PYTHONPATH=$PYPATH${PYTHONPATH:+:$PYTHONPATH}
status=0
timeout --kill-after=20 "$LIMIT" "$PY" scripts/gpu_check.py --out "$OUT_DIR" "$@" || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "verdict: timed out after $LIMIT s (the steps done are in $OUT_DIR/gpu_check.json)"
fi
exit "$status"

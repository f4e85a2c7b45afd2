#!/usr/bin/env bash
# The README's commands. Makes its own virtual environment (.venv) and installs what it
# needs on first use: torch first, as the local CPU wheel torch==2.13.0 when no torch is
# present, so nothing ever pulls a multi-GB CUDA build; then this package with [test].
#   bash scripts/run.sh demo [cli args]   the main job (see README)
#   bash scripts/run.sh test [pytest args]   (no args: the suite, then the ComfyUI server tests)
#   bash scripts/run.sh cli ARGS...       any `python -m cav_core` command
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CAV_VENV:-.venv}
py="$venv/bin/python"
if [ ! -x "$py" ]; then
    python3 -m venv "$venv"
fi
stamp="$venv/.cav-deps-$(cat pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    echo "setting up $venv (first run only) ..." >&2
    "$py" -m pip install -q --upgrade pip >&2
    "$py" -c "import torch" 2>/dev/null || "$py" -m pip install -q "torch==2.13.0" >&2
    "$py" -m pip install -q -e ".[test]" >&2
    touch "$stamp"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
cmd=${1:-demo}
shift || true
case "$cmd" in
    demo) exec "$py" -m cav_core demo "$@" ;;
    test)
        if [ $# -gt 0 ]; then exec "$py" -m pytest "$@"; fi
        # Everything by default: the import rules (pyproject.toml [tool.importlinter]), the
        # fast suite, then the real ComfyUI server tests (opt-in marker, as they start a
        # server; they skip if ../shared/comfyui is absent).
        "$venv/bin/lint-imports" --no-cache --no-logo
        "$py" -m pytest
        exec "$py" -m pytest -m comfyui tests/test_comfyui_server.py ;;
    cli)  exec "$py" -m cav_core "$@" ;;
    *) echo "usage: scripts/run.sh demo|test|cli [args]" >&2; exit 2 ;;
esac

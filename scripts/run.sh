#!/usr/bin/env bash
# The README's commands. Makes its own virtual environment (.venv) and installs what it
# needs on first use: torch first, as the local CPU wheel torch==2.13.0 when no torch is
# present, so nothing ever pulls a multi-GB CUDA build; then this package with [test].
#   bash scripts/run.sh demo [cli args]   the main job (see README)
#   bash scripts/run.sh test [pytest args]   (no args: the suite, `comfy node validate`, then the
#                                           ComfyUI server and browser tests)
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

# tests/test_comfyui_browser.py drives Debian's chromium + chromium-driver. In CI ($CI set, as .ci/run
# does) and as root, install them when absent; if that fails the test skips with its reason.
browser_deps() {
    if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then return 0; fi
    if [ -n "${CI:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing chromium + chromium-driver for the browser test ..." >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
            >/dev/null 2>&1 || echo "could not install chromium: the browser test will skip" >&2
    fi
}

# The registry's publishing checks, offline: `comfy node validate` (comfy-cli, with ruff) in a venv of
# its own so its many dependencies stay out of .venv. It only warns about a bad pyproject.toml
# ([project] license/version, [tool.comfy] requires-comfyui ...), so any warning fails here.
registry_check() {
    local rv=${CAV_REGISTRY_VENV:-.venv-registry} out
    if [ ! -x "$rv/bin/comfy" ]; then
        { python3 -m venv "$rv" && "$rv/bin/python" -m pip install -q "comfy-cli>=1.5" ruff; } >&2 \
            || { echo "comfy-cli could not be installed: registry check skipped" >&2; return 0; }
    fi
    out=$("$rv/bin/comfy" --skip-prompt --no-enable-telemetry node validate </dev/null 2>&1) \
        || { echo "$out" >&2; return 1; }
    echo "$out"
    if grep -qiE "warning|error" <<<"$out"; then
        echo "comfy node validate warned: fix pyproject.toml" >&2
        return 1
    fi
}
cmd=${1:-demo}
shift || true
case "$cmd" in
    demo) exec "$py" -m cav_core demo "$@" ;;
    test)
        if [ $# -gt 0 ]; then exec "$py" -m pytest "$@"; fi
        # Everything by default: the import rules (pyproject.toml [tool.importlinter]), the fast suite, the registry check, then the real ComfyUI server
        # and browser tests (opt-in marker, as they start a server; they skip if ../shared/comfyui is
        # absent, the browser test also without Chromium).
        "$venv/bin/lint-imports" --no-cache --no-logo
        "$py" -m pytest
        registry_check
        browser_deps
        exec "$py" -m pytest -m comfyui tests/test_comfyui_server.py tests/test_comfyui_browser.py ;;
    cli)  exec "$py" -m cav_core "$@" ;;
    *) echo "usage: scripts/run.sh demo|test|cli [args]" >&2; exit 2 ;;
esac

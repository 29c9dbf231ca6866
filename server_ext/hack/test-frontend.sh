#!/usr/bin/env bash
# The gpushift front end from a clean clone: install the npm packages, build the
# labextension, link it into the virtual environment, run the unit tests (jest) and the
# browser tests (Galata in Debian's chromium, each "pod" a real sidecar + a real
# JupyterLab with the server extension). Idempotent; fast when node_modules are there.
#
#   server_ext/hack/test-frontend.sh            # everything
#   server_ext/hack/test-frontend.sh --unit     # install + build + jest only
#   server_ext/hack/test-frontend.sh --build    # install + build, quiet (make demo)
#   server_ext/hack/test-frontend.sh --jest     # jest only (built already)
#   server_ext/hack/test-frontend.sh --browser  # the browser tests only (built already)
#   server_ext/hack/test-frontend.sh -g idle    # extra arguments go to playwright
#
# Browser-test screenshots go to ui-tests/screenshots-latest/ (ignored);
# GPUSHIFT_SCREENSHOTS=<folder> writes them there instead (`make screenshots`).
#
# Needs: the repository's .venv with gpushift-jupyter installed (GPUSHIFT_VENV moves it),
# Node.js >= 20, and `apt-get install chromium` for the browser tests.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GPUSHIFT_VENV:-$(cd "$HERE/.." && pwd)/.venv}"
export PATH="$VENV/bin:$PATH"
export CI=1 PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export GPUSHIFT_PYTHON="$VENV/bin/python"

step() { printf '\n== %s (%ss)\n' "$1" "$SECONDS"; }

cd "$HERE"
MODE="${1:-}"
if [[ "$MODE" == "--unit" || "$MODE" == "--browser" || "$MODE" == "--build" || "$MODE" == "--jest" ]]; then
  shift
fi

if [[ "$MODE" == "--build" ]]; then
  # For `make demo`: one line, the tools' output only when something failed.
  LOG="$HERE/.build.log"
  echo "building the JupyterLab front end (sources changed; log: server_ext/.build.log) ..."
  if ! { jlpm install && jlpm build && jupyter-builder develop . --overwrite; } >"$LOG" 2>&1; then
    tail -n 60 "$LOG" >&2
    echo "the front end did not build: see $LOG" >&2
    exit 1
  fi
  exit 0
fi
if [[ "$MODE" == "--jest" ]]; then
  step "unit tests (jest)"
  jlpm test
  exit 0
fi
if [[ "$MODE" != "--browser" ]]; then
  step "npm packages"
  jlpm install
  step "build (TypeScript + labextension)"
  jlpm build
  # Where JupyterLab finds the extension in this environment (a symlink; idempotent).
  jupyter-builder develop . --overwrite >/dev/null
  step "unit tests (jest)"
  jlpm test
fi
if [[ "$MODE" == "--unit" ]]; then
  step "done"
  exit 0
fi

CHROMIUM="${GPUSHIFT_CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" ]]; then
  echo "browser tests need Debian's chromium at $CHROMIUM: apt-get install -y chromium" >&2
  exit 2
fi
# JupyterLab's German language pack: the browser tests check the connection-lost
# handling under a non-English locale.
if ! python -c "import jupyterlab_language_pack_de_DE" 2>/dev/null; then
  step "JupyterLab's German language pack (browser tests under a non-English locale)"
  python -m pip install --quiet jupyterlab-language-pack-de-DE
fi
cd "$HERE/ui-tests"
step "browser test packages"
jlpm install
# Playwright runs the specs without checking their types: tsc does (tests/ and e2e/).
step "browser tests: type check"
"$HERE/node_modules/.bin/tsc" --noEmit -p .
step "browser tests (Galata)"
jlpm playwright test "$@"
step "done"
